"""keep_freed_memory: freed training memory is reused instead of faulted in again each step."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

from optfusion_lab.train import device

# a "step" that allocates, writes and frees 64 MB blocks, the shape of a CPU training step's
# activations; the page faults it costs are counted before and after keep_freed_memory()
_SCRIPT = textwrap.dedent("""
    import resource, torch
    from optfusion_lab.train import keep_freed_memory

    def faults(steps=12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            blocks = [torch.ones(16 * 2**20) for _ in range(3)]  # 3 x 64 MB
            del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults(2)  # torch's own first-use allocations
    default = faults()
    took = keep_freed_memory()
    faults(1)  # the first step after the setting fills the heap once
    print(default, faults(), took)
""")


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's; elsewhere the call is a no-op")
def test_freed_blocks_are_reused_without_page_faults():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         check=True).stdout.split()
    default, kept, took = int(out[0]), int(out[1]), out[2]
    assert took == "True"
    if default < 12 * 3 * 1000:  # this allocator already reuses the blocks: nothing to show
        pytest.skip(f"only {default} page faults without the setting")
    # 12 steps of 3 x 16k pages fault about 590k times by default; reused pages never fault
    assert kept < default / 10, (default, kept)


def test_no_mallopt_is_a_no_op(monkeypatch):
    class NoMallopt:  # a C library without glibc's mallopt (musl has it, macOS does not)
        def __init__(self, name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(device.ctypes, "CDLL", NoMallopt)
    assert device.keep_freed_memory.__wrapped__() is False


def test_fit_keeps_freed_memory_unless_told_not_to_and_a_run_records_which(monkeypatch,
                                                                           tmp_path):
    """``TrainConfig.keep_freed_memory`` (``--release-freed-memory`` turns it off) decides
    whether ``fit`` sets the allocator; the choice is in result.json but not in the resume
    fingerprint, since it changes no value of the run."""
    from conftest import DATA_SAMPLES

    from optfusion_lab.cli import main
    from optfusion_lab.data import PrepareConfig, prepare
    from optfusion_lab.train import TrainConfig, loop
    from optfusion_lab.train.run_config import PRESENTATION_FIELDS

    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(True) or True)
    data = tmp_path / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", data, PrepareConfig("criteo"))
    common = ["--model", "dnn", "--preset", "tiny", "--epochs", "1", "--seeds", "0",
              "--device", "cpu", "--embed-dim", "3", "--mlp", "8", "--no-progress",
              "--threads", "1"]  # fmt: skip
    recorded = {}
    for name, flags in (("kept", []), ("released", ["--release-freed-memory"])):
        calls.clear()
        out = tmp_path / name
        assert main(["train", "--data", str(data), "--out", str(out), *common, *flags]) == 0
        recorded[name] = len(calls)
        result = json.loads((out / "result.json").read_text())
        assert result["train_config"]["keep_freed_memory"] is (name == "kept")
    assert recorded == {"kept": 1, "released": 0}
    from optfusion_lab.cli import build_parser
    from optfusion_lab.search_cli import _train_config

    for command in ("search", "retrain"):
        extra = ["--genotype", "g.json"] if command == "retrain" else []
        args = build_parser().parse_args([command, "--data", "d", "--out", "o", *extra,
                                          "--release-freed-memory"])
        assert _train_config(TrainConfig(), args).keep_freed_memory is False, command
    assert TrainConfig().keep_freed_memory is True
    assert "keep_freed_memory" in PRESENTATION_FIELDS
