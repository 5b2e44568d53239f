"""No command deletes, replaces or hides what optfusion-lab did not write; reruns replace their own.

Each command is run as a user would (``optfusion_lab.cli.main``) against a path that holds a
user's file or folder: the command exits with code 2 and one line naming the path, and every
byte at the path is still there, with nothing moved aside under a dot-name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from optfusion_lab.cli import main
from optfusion_lab.data import synthetic
from optfusion_lab.io import MARKER, PREPARED_DATA, TRAINING_RUN, output_kind

REPO = Path(__file__).resolve().parents[1]
TEACHER_GENOTYPE = REPO / "data_samples" / "teacher_genotype.json"
LOOP = ["--epochs", "1", "--device", "cpu", "--threads", "1", "--no-progress"]
QUICK = ["--preset", "tiny", *LOOP]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("a user's own notes\n")
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A small Criteo file in the official layout."""
    return synthetic.write(synthetic.generate("criteo", 400, seed=1),
                           tmp_path_factory.mktemp("raw") / "criteo.txt")


@pytest.fixture(scope="module")
def data(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "criteo"
    assert main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dnn"
    assert main(["train", "--data", str(data), "--model", "dnn", "--out", str(out),
                 "--seeds", "0", *QUICK]) == 0
    return out


def refused(capsys, path: Path, before: dict[str, bytes], *fragments: str) -> None:
    """The command's error names ``path`` and left its content as it was."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err, err
    for fragment in fragments:
        assert fragment in err, err
    after = snapshot(path.parent)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [name for name in after if name.split("/")[-1].startswith(".") and
                name not in before]


# ---------------------------------------------------------------- prepare


def test_prepare_into_a_folder_with_a_users_file_changes_nothing(raw, tmp_path, capsys):
    out = user_folder(tmp_path / "mine")
    before = snapshot(tmp_path)
    code = main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out)])
    assert code == 2
    refused(capsys, out, before, "did not write (notes.txt)")


def test_prepare_onto_a_users_file_changes_nothing(raw, tmp_path, capsys):
    out = tmp_path / "dataset"
    out.write_text("not a dataset\n")
    before = snapshot(tmp_path)
    code = main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out)])
    assert code == 2
    refused(capsys, out, before, "is a file")


def test_prepare_replaces_its_own_dataset_and_uses_an_empty_folder(raw, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out)]) == 0
    assert output_kind(out) == PREPARED_DATA
    assert main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out),
                 "--seed", "7"]) == 0
    assert json.loads((out / "meta.json").read_text())["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no scratch left


def test_a_dataset_without_its_marker_is_not_replaced(raw, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out)]) == 0
    (out / MARKER).unlink()
    before = snapshot(tmp_path)
    code = main(["prepare", "--dataset", "criteo", "--input", str(raw), "--out", str(out),
                 "--seed", "7"])
    assert code == 2
    refused(capsys, out, before, "did not write")


# ---------------------------------------------------------------- predict


def predict(run: Path, raw: Path, out: Path) -> int:
    return main(["predict", "--run", str(run), "--input", str(raw), "--out", str(out),
                 "--device", "cpu"])


def test_predict_into_a_folder_is_a_clear_error(run, raw, tmp_path, capsys):
    out = user_folder(tmp_path / "preds")
    before = snapshot(tmp_path)
    assert predict(run, raw, out) == 2
    refused(capsys, out, before, "is a folder; give the path of a file")


def test_predict_onto_a_users_file_changes_nothing_and_reruns_replace(run, raw, tmp_path, capsys):
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\nann,3\n")
    before = snapshot(tmp_path)
    assert predict(run, raw, mine) == 2
    refused(capsys, mine, before, "is not an earlier prediction file")

    out = tmp_path / "preds.csv"
    assert predict(run, raw, out) == 0
    assert predict(run, raw, out) == 0  # its own earlier output: replaced
    assert list(pd.read_csv(out).columns) == ["probability", "label"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv", "preds.csv"]


# ---------------------------------------------------------------- train, search, retrain


def test_train_into_a_users_folder_changes_nothing(data, tmp_path, capsys):
    out = user_folder(tmp_path / "run")
    before = snapshot(tmp_path)
    code = main(["train", "--data", str(data), "--model", "dnn", "--out", str(out), *QUICK])
    assert code == 2
    refused(capsys, out, before, "did not write (notes.txt)")


def test_train_reruns_into_its_own_run_but_not_into_a_dataset(run, data, capsys):
    assert output_kind(run) == TRAINING_RUN
    assert main(["train", "--data", str(data), "--model", "dcn", "--out", str(run),
                 "--seeds", "3", *QUICK]) == 0
    assert json.loads((run / "result.json").read_text())["model"] == "dcn"
    capsys.readouterr()
    before = snapshot(data.parent)
    code = main(["train", "--data", str(data), "--model", "dnn", "--out", str(data), *QUICK])
    assert code == 2
    refused(capsys, data, before, "holds an optfusion-lab prepared data, not a training run")


def test_search_into_a_users_folder_changes_nothing(data, tmp_path, capsys):
    for extra in ([], ["--seeds", "0", "1"]):
        out = user_folder(tmp_path / f"search{len(extra)}")
        before = snapshot(tmp_path)
        assert main(["search", "--data", str(data), "--out", str(out), *extra, *QUICK]) == 2
        refused(capsys, out, before, "did not write (notes.txt)")


def test_retrain_into_a_users_folder_changes_nothing(teacher_dir, tmp_path, capsys):
    out = user_folder(tmp_path / "retrain")
    before = snapshot(tmp_path)
    code = main(["retrain", "--data", str(teacher_dir), "--genotype", str(TEACHER_GENOTYPE),
                 "--out", str(out), "--seeds", "0", *LOOP])
    assert code == 2
    refused(capsys, out, before, "did not write (notes.txt)")


def test_a_failed_predict_leaves_no_scratch(run, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\tthree columns only\n")
    out = tmp_path / "out" / "preds.csv"
    assert predict(run, bad, out) == 2
    assert "bad.tsv" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.tsv", "out"]
