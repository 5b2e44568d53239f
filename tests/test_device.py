"""keep_freed_memory: freed training memory is reused instead of faulted in again each step."""

from __future__ import annotations

import ctypes
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
