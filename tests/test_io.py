"""The one atomic writer, scratch space and the output guard (optfusion_lab.io)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optfusion_lab.io import (
    MARKER,
    PREPARED_DATA,
    SEARCH_RUN,
    TRAINING_RUN,
    OutputError,
    check_output_file,
    claim_output_folder,
    mark_output_folder,
    output_kind,
    replace_output_folder,
    scratch_dir,
    scratch_path,
    write_atomic,
    write_json,
    write_text,
)


def test_write_atomic_replaces_and_leaves_no_scratch(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_removes_the_scratch(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})

    def fail(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_writing_onto_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_text(tmp_path / "out", "x")


def test_scratch_of_a_dead_process_is_removed_by_the_next_write(tmp_path):
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale_file = tmp_path / f".a.txt.tmp-{pid}"
    stale_file.write_text("left by a killed run")
    stale_dir = tmp_path / f".data.tmp-{pid}"
    stale_dir.mkdir()
    (stale_dir / "X.npy").write_text("half")
    unrelated = tmp_path / f".b.txt.tmp-{pid}"  # another path's scratch: not ours to remove here
    unrelated.write_text("x")
    write_text(tmp_path / "a.txt", "new")
    with scratch_dir(tmp_path / "data") as tmp:
        assert tmp == scratch_path(tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == [unrelated.name, "a.txt"]


def test_scratch_dir_is_removed_on_failure(tmp_path):
    with pytest.raises(KeyError), scratch_dir(tmp_path / "out") as tmp:
        (tmp / "part").write_text("x")
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_claim_marks_new_and_empty_folders_and_accepts_its_own_kind(tmp_path):
    new = claim_output_folder(tmp_path / "run", TRAINING_RUN)
    assert output_kind(new) == TRAINING_RUN and (new / MARKER).is_file()
    (new / "result.json").write_text("{}")
    assert claim_output_folder(new, TRAINING_RUN) == new  # a rerun into its own output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert output_kind(claim_output_folder(empty, SEARCH_RUN)) == SEARCH_RUN


def test_claim_refuses_foreign_folders_files_and_other_kinds(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"user holds files optfusion-lab did not write \(notes"):
        claim_output_folder(user, TRAINING_RUN)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        claim_output_folder(a_file, TRAINING_RUN)
    assert a_file.read_text() == "mine"

    search_run = claim_output_folder(tmp_path / "search", SEARCH_RUN)
    with pytest.raises(OutputError, match="holds an optfusion-lab search run, not a training run"):
        claim_output_folder(search_run, TRAINING_RUN)


def test_replace_output_folder_swaps_its_own_kind_only(tmp_path):
    out = tmp_path / "data"

    def finished(text: str):
        new = tmp_path / f".new-{text}"
        new.mkdir()
        (new / "meta.json").write_text(text)
        mark_output_folder(new, PREPARED_DATA)
        return new

    replace_output_folder(finished("first"), out, PREPARED_DATA)
    replace_output_folder(finished("second"), out, PREPARED_DATA)
    assert (out / "meta.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]

    (out / MARKER).unlink()  # no longer recognisable as ours
    new = finished("third")
    with pytest.raises(OutputError, match="did not write"):
        replace_output_folder(new, out, PREPARED_DATA)
    assert (out / "meta.json").read_text() == "second" and new.is_dir()


def test_check_output_file(tmp_path):
    def is_own(path):
        return path.read_text().startswith("probability")

    assert check_output_file(tmp_path / "new.csv", "prediction file", is_own)
    own = tmp_path / "own.csv"
    own.write_text("probability\n0.5\n")
    assert check_output_file(own, "prediction file", is_own) == own
    other = tmp_path / "other.csv"
    other.write_text("name,age\n")
    with pytest.raises(OutputError, match="is not an earlier prediction file"):
        check_output_file(other, "prediction file", is_own)
    with pytest.raises(OutputError, match="is a folder; give the path of a file"):
        check_output_file(tmp_path, "prediction file", is_own)


def test_a_link_is_never_replaced(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="link is a link; it was kept"):
        claim_output_folder(link, TRAINING_RUN)
    assert link.is_symlink() and list(target.iterdir()) == []


def test_write_json_is_strict_json_with_null_for_non_finite(tmp_path):
    document = {"mean": float("nan"), "std": float("inf"), "per_seed": [0.5, float("-inf")],
                "nested": {"x": (1.0, float("nan"))}, "n": 3}
    path = write_json(tmp_path / "r.json", document)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict {name}"))
    assert loaded == {"mean": None, "std": None, "per_seed": [0.5, None],
                      "nested": {"x": [1.0, None]}, "n": 3}
