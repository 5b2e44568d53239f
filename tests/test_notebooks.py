"""The notebook course, executed: Papermill runs every notebook once with the CI parameters,
nbval re-runs the fast ones and compares their `# NBVAL_CHECK_OUTPUT` cells, the sweep runs a
two-point grid, and failures name the notebook and the cell. Also: each .py/.ipynb pair is in
sync and committed notebooks carry no outputs (these two are fast and unmarked)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import jupytext
import nbformat
import pytest
from conftest import DATA_SAMPLES, REPO
from test_course import make_notebook

from optfusion_lab import course
from optfusion_lab.cli import main

NOTEBOOKS = REPO / "notebooks"
COURSE = course.find_notebooks(NOTEBOOKS)
ALWAYS_NBVAL = ("00_data", "01_components")  # the fast notebooks nbval re-runs in any case
NBVAL_UNDER_S = 60  # and any other notebook whose CI run took less than this


def cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_the_course_has_notebooks_each_paired_with_its_py():
    assert COURSE, "no course notebooks in notebooks/"
    for nb in COURSE:
        assert nb.with_suffix(".py").is_file(), f"{nb.name} has no paired .py (jupytext)"
    for py in NOTEBOOKS.glob("[0-9][0-9]_*.py"):
        assert py.with_suffix(".ipynb").is_file(), f"{py.name} has no paired .ipynb"


@pytest.mark.parametrize("notebook", COURSE, ids=lambda p: p.stem)
def test_py_and_ipynb_pairs_are_in_sync(notebook):
    source = jupytext.read(notebook.with_suffix(".py"))
    paired = nbformat.read(notebook, as_version=4)
    assert cells(source) == cells(paired), (
        f"{notebook.name} differs from its .py; run `make sync-notebooks`"
    )


@pytest.mark.parametrize("notebook", COURSE, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{notebook.name} cell {i}"
    assert "papermill" not in nb.metadata, f"{notebook.name} is an executed copy"


@pytest.mark.parametrize("notebook", COURSE, ids=lambda p: p.stem)
def test_one_parameters_cell_that_papermill_reads_whole(notebook):
    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1, f"{notebook.name}: {len(tagged)} cells tagged parameters"
    assigned = [line for line in tagged[0].source.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    assert all("  # " in line for line in assigned), "every parameter has a comment"
    declared = course.declared_parameters(notebook)
    assert len(declared) == len(assigned), f"papermill reads {sorted(declared)} of {assigned}"
    assert course.OUTPUT_PARAMETER in declared


# ---------------------------------------------------------------- executed (marker: notebooks)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every course notebook, executed once by Papermill with the CI parameters."""
    out = tmp_path_factory.mktemp("course")
    parameters = course.read_parameter_file(NOTEBOOKS / "ci_parameters.yaml")
    parameters["samples_dir"] = str(DATA_SAMPLES)  # absolute: nbval re-runs copies elsewhere
    started = time.perf_counter()
    runs = course.run_course(NOTEBOOKS, out, parameters=parameters)
    print(f"papermill: {len(runs)} notebooks in {time.perf_counter() - started:.1f} s")
    return out, runs


@pytest.mark.notebooks
def test_every_notebook_runs_end_to_end(executed):
    out, runs = executed
    failed = [r.error for r in runs if not r.ok]
    assert not failed, "\n".join(failed)
    assert [r.name for r in runs] == [nb.stem for nb in COURSE]
    for run in runs:
        results = course.read_results(run.output_dir)  # every notebook writes a flat results.json
        assert results, f"{run.name}: empty results.json"


@pytest.mark.notebooks
def test_html_pages_open_offline_and_the_index_links_them(executed):
    out, runs = executed
    index = (out / "index.html").read_text()
    for run in runs:
        page = run.html.read_text()
        assert f'href="{run.html.name}"' in index and f'href="{run.executed.name}"' in index
        loaded = re.findall(r'<script[^>]*src="([^"]+)"', page)
        assert not [u for u in loaded if "plot.ly" in u or "plotly" in u], loaded
        if "plotly-graph-div" in page:  # a notebook with figures carries plotly.js itself
            assert re.search(r"plotly\.js v\d", page), f"{run.html.name} lacks plotly.js"
        assert "mathjax/MathJax.js?" in " ".join(loaded)
    assert (out / "mathjax" / "MathJax.js").is_file()
    assert "plotly-graph-div" in (out / "00_data.html").read_text()  # 00 draws figures
    statuses = json.loads((out / "course.json").read_text())
    assert [s["name"] for s in statuses] == [r.name for r in runs]


@pytest.mark.notebooks
def test_nbval_reruns_the_fast_notebooks_and_finds_the_same_outputs(executed):
    out, runs = executed
    chosen = [r.executed for r in runs if r.ok and (r.name in ALWAYS_NBVAL
                                                    or r.seconds < NBVAL_UNDER_S)]  # fmt: skip
    assert {p.stem for p in chosen} >= {n for n in ALWAYS_NBVAL if (NOTEBOOKS / f"{n}.ipynb")
                                        .is_file()}  # fmt: skip
    checked = sum("# NBVAL_CHECK_OUTPUT" in c.source for p in chosen
                  for c in nbformat.read(p, as_version=4).cells)  # fmt: skip
    assert checked >= len(chosen), "each fast notebook marks stable cells # NBVAL_CHECK_OUTPUT"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(out), *map(str, chosen)],
        cwd=out, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    print(f"nbval: {len(chosen)} notebooks in {time.perf_counter() - started:.1f} s")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


@pytest.mark.notebooks
def test_a_failing_notebook_is_named_with_its_cell_and_the_others_still_run(tmp_path):
    books = tmp_path / "notebooks"
    books.mkdir()
    make_notebook(books / "00_bad.ipynb", "output_dir = 'out'  # folder",
                  "x = 1\nraise RuntimeError('planted failure')")  # fmt: skip
    make_notebook(books / "01_good.ipynb", "output_dir = 'out'  # folder",
                  "from optfusion_lab.course import write_results\n"
                  "write_results(output_dir, {'ok': 1})")  # fmt: skip
    lines = []
    runs = course.run_course(books, tmp_path / "out", progress=lines.append)
    bad, good = runs
    assert not bad.ok and good.ok
    assert "00_bad.ipynb: cell 3 `x = 1` failed: RuntimeError: planted failure" in bad.error
    assert lines[0].startswith("[1/2] 00_bad: FAILED") and "planted failure" in lines[1]
    assert lines[2].startswith("[2/2] 01_good: ok")
    assert bad.executed.is_file() and bad.html.is_file()  # kept, with the error in it
    assert "planted failure" in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.notebooks
def test_sweep_runs_a_two_point_grid_gathers_a_table_and_skips_done_points(tmp_path, capsys):
    notebook = make_notebook(
        tmp_path / "square.ipynb",
        "x = 1  # the number to square\nlabel = 'a'  # a fixed label\n"
        "output_dir = 'out'  # folder",
        "from optfusion_lab.course import write_results\n"
        "assert x != 3, 'three is refused'\n"
        "write_results(output_dir, {'square': x * x, 'label': label})",
    )
    out = tmp_path / "sweep"
    code = main(["sweep", str(notebook), "-p", "x", "1", "2", "--set", "label", "b",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    table = course.read_results(out / "x=2")
    assert table == {"square": 4, "label": "b"}
    import pandas as pd

    frame = pd.read_csv(out / "results.csv")
    assert frame[["x", "status", "square"]].values.tolist() == [[1, "ok", 1], [2, "ok", 4]]
    assert (out / "x=1.ipynb").is_file() and (out / "summary.html").is_file()
    assert "plotly" in (out / "summary.html").read_text()[:2_000_000].lower()
    stamp = (out / "x=1.ipynb").stat().st_mtime_ns
    capsys.readouterr()

    # A rerun with a third point: the two done points are skipped, the failing one is
    # reported with its cell, and the table still has every point.
    result = course.sweep(notebook, {"x": [1, 2, 3]}, out, parameters={"label": "b"})
    printed = capsys.readouterr().out
    assert "[1/3] x=1: done before, skipped" in printed
    assert "[2/3] x=2: done before, skipped" in printed
    assert "[3/3] x=3: FAILED" in printed and "three is refused" in printed
    assert (out / "x=1.ipynb").stat().st_mtime_ns == stamp
    assert [r.name for r in result.failed] == ["x=3"]
    assert "cell 3" in result.failed[0].error
    assert result.table["status"].tolist() == ["ok", "ok", "failed"]
    # The fixed parameter is part of what makes a point done: another value runs again.
    again = course.sweep(notebook, {"x": [1]}, out, parameters={"label": "c"}, progress=None)
    assert not again.runs[0].skipped and course.read_results(out / "x=1")["label"] == "c"
