"""A search killed after its first checkpoint resumes to the identical genotype."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from optfusion_lab.cli import main


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return teacher_dir


def search_command(data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "optfusion_lab.cli", "search", "--data", str(data), "--out",
            str(out), "--preset", "tiny", "--epochs", "4", "--device", "cpu", "--threads", "1",
            "--no-progress", *extra]


def test_sigkill_after_first_checkpoint_then_resume_gives_the_same_genotype(teacher, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(search_command(teacher, reference), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(search_command(teacher, killed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pt").exists():  # written atomically: complete when present
        assert process.poll() is None, "the search ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists(), "killed too late: the run had finished"

    done = subprocess.run([*search_command(teacher, killed), "--resume"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed after epoch" in done.stdout
    assert (killed / "genotype.json").read_bytes() == (reference / "genotype.json").read_bytes()
    result = json.loads((killed / "result.json").read_text())
    assert result["resumed_from_epoch"] >= 1
    assert json.loads((reference / "result.json").read_text())["resumed_from_epoch"] is None
    assert result["test_auc"] == json.loads((reference / "result.json").read_text())["test_auc"]


def test_resume_on_a_finished_run_is_a_no_op_and_other_options_are_an_error(teacher, tmp_path,
                                                                             capsys):
    out = tmp_path / "run"
    args = ["search", "--data", str(teacher), "--out", str(out), "--preset", "tiny", "--epochs",
            "1", "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert main([*args, "--resume", "--arch-lr", "0.5"]) == 2
    assert "other data or options" in capsys.readouterr().err


def test_search_over_seeds_writes_a_stability_summary(teacher, tmp_path):
    out = tmp_path / "seeds"
    assert main(["search", "--data", str(teacher), "--out", str(out), "--preset", "tiny",
                 "--epochs", "1", "--device", "cpu", "--threads", "1", "--no-progress",
                 "--seeds", "0", "1", "--algorithm", "sequential"]) == 0
    for seed in (0, 1):
        config = json.loads((out / f"seed_{seed}" / "config.json").read_text())
        assert config["search"]["algorithm"] == "sequential" and config["train"]["seed"] == seed
        assert (out / f"seed_{seed}" / "checkpoint-connections.pt").is_file()
    stability = json.loads((out / "stability.json").read_text())
    assert stability["seeds"] == [0, 1] and stability["num_genotypes"] == 2
