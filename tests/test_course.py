"""The course machinery without running a kernel: parameters, grids, names, results files."""

from __future__ import annotations

import json

import nbformat
import pytest
from conftest import REPO

from optfusion_lab import course
from optfusion_lab.io import OutputError


def make_notebook(path, parameters: str, body: str):
    """A small notebook with a ``parameters`` cell, written to ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {path.stem}"),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return path


def test_grid_points_vary_the_first_parameter_slowest():
    points = course.grid_points({"a": [1, 2], "b": ["x", "y"]})
    assert points == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                      {"a": 2, "b": "y"}]  # fmt: skip
    with pytest.raises(ValueError, match="'b' has no values"):
        course.grid_points({"a": [1], "b": []})


def test_point_names_are_file_names_that_tell_the_parameters():
    assert course.point_name({"epochs": 2, "lr": 0.001}) == "epochs=2__lr=0.001"
    assert course.point_name({"shallow": "cin", "path": "a/b c"}) == "shallow=cin__path=a-b-c"
    names = {course.point_name(p) for p in course.grid_points({"x": [1, 10, 100]})}
    assert len(names) == 3


def test_command_line_values_are_parsed_as_json_or_kept_as_strings():
    assert [course.parse_value(v) for v in ("3", "1e-3", "true", "null", "cin", "[1, 2]")] == [
        3, 0.001, True, None, "cin", [1, 2]]  # fmt: skip


def test_parameter_file_splits_shared_and_per_notebook_values(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("epochs: 1\n00_data:\n  show_rows: 2\n")
    shared, own = course.split_parameters(course.read_parameter_file(path), ["00_data"])
    assert shared == {"epochs": 1} and own == {"00_data": {"show_rows": 2}}
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="p.yaml: expected a mapping"):
        course.read_parameter_file(path)


def test_results_must_be_flat(tmp_path):
    path = course.write_results(tmp_path, {"auc": 0.7, "model": "dcn", "ok": True, "n": None})
    assert json.loads(path.read_text())["auc"] == 0.7
    assert course.read_results(tmp_path)["model"] == "dcn"
    with pytest.raises(ValueError, match=r"must be flat.*\['per_seed'\]"):
        course.write_results(tmp_path, {"auc": 0.7, "per_seed": [0.7, 0.71]})


def test_unknown_parameters_are_refused_before_anything_runs(tmp_path):
    make_notebook(tmp_path / "00_a.ipynb", "x = 1  # a number\noutput_dir = 'out'  # folder",
                  "print(x)")  # fmt: skip
    with pytest.raises(ValueError, match="declared by no notebook run"):
        course.run_course(tmp_path, tmp_path / "out", parameters={"epochs": 1}, progress=None)
    with pytest.raises(ValueError, match=r"00_a.ipynb \(its own parameters\): unknown parameter"):
        course.run_course(tmp_path, tmp_path / "out", parameters={"00_a": {"y": 2}},
                          progress=None)  # fmt: skip
    with pytest.raises(ValueError, match="unknown parameter"):
        course.sweep(tmp_path / "00_a.ipynb", {"epoch": [1, 2]}, tmp_path / "sweep",
                     progress=None)  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "sweep").exists()


def test_a_notebook_without_output_dir_is_refused(tmp_path):
    make_notebook(tmp_path / "00_a.ipynb", "x = 1  # a number", "print(x)")
    with pytest.raises(ValueError, match="must declare 'output_dir'"):
        course.run_course(tmp_path, tmp_path / "out", progress=None)


def test_sweep_takes_the_paired_py_of_a_notebook(tmp_path):
    make_notebook(tmp_path / "00_a.ipynb", "output_dir = 'out'  # folder", "")
    (tmp_path / "00_a.py").write_text("")
    (tmp_path / "01_b.py").write_text("")
    assert course.notebook_path(tmp_path / "00_a.py") == tmp_path / "00_a.ipynb"
    with pytest.raises(FileNotFoundError, match="jupytext --sync"):
        course.notebook_path(tmp_path / "01_b.py")


def test_the_ci_parameter_file_is_valid():
    values = course.read_parameter_file(REPO / "notebooks" / "ci_parameters.yaml")
    assert isinstance(values, dict)


def test_the_course_never_writes_into_a_folder_of_foreign_files(tmp_path):
    make_notebook(tmp_path / "00_a.ipynb", "x = 1  # a number\noutput_dir = 'out'  # folder", "")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="thesis.tex"):
        course.run_course(tmp_path, out, progress=None)
    with pytest.raises(OutputError, match="thesis.tex"):
        course.sweep(tmp_path / "00_a.ipynb", {"x": [1, 2]}, out, progress=None)
    with pytest.raises(ValueError, match="output_dir is set by the sweep"):
        course.sweep(tmp_path / "00_a.ipynb", {"output_dir": ["a"]}, out, progress=None)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
