"""Run the notebook course and parameter sweeps with Papermill; export offline HTML.

The course is every ``NN_name.ipynb`` in ``notebooks/`` (each paired with a jupytext ``NN_name.py``,
the reviewed source). :func:`run_course` executes them in order with Papermill, writes each
executed notebook and an HTML export of it, and an index page that links them. :func:`sweep`
executes one notebook once per point of a parameter grid and gathers what each point wrote into
one tidy table.

Conventions every course notebook follows:

- one cell tagged ``parameters`` with plain values (Papermill replaces them);
- a parameter ``output_dir``: the folder the notebook writes to. The course gives each notebook
  its own folder (``OUT/NN_name``), a sweep each grid point its own;
- a flat ``results.json`` in ``output_dir`` (:func:`write_results`): names to numbers or strings.

Figures stay visible offline: the kernels run with ``PLOTLY_RENDERER=plotly_mimetype+notebook``
(unless the caller set another), so each notebook carries plotly.js once, in its first figure's
output, and its HTML export needs no network. The executed files and the HTML pages are therefore
a few MB each. Equations render offline from a copy of MathJax in ``OUT/mathjax`` (from the
``jupyter-server-mathjax`` package).

A failing notebook does not stop the course: it is reported with its name, the failing cell and
the error, its executed copy (with the error) and HTML page are kept, the other notebooks still
run, and the command exits non-zero. A sweep does the same per grid point, and a second run skips
the points already done.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from optfusion_lab.io import COURSE_RUN, SWEEP_RUN, claim_output_folder, write_text

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"  # the course's notebooks, run in the order of their names
OUTPUT_PARAMETER = "output_dir"  # every course notebook declares it (see the module docstring)
RESULTS_FILE = "results.json"
PLOTLY_RENDERER = "plotly_mimetype+notebook"  # JupyterLab's renderer + an offline HTML copy
KERNEL_NAME = "python3"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # a configuration jupyter-server-mathjax ships

Progress = Callable[[str], None]


class NotebookError(RuntimeError):
    """A notebook stopped with an error: names the notebook, the cell and the error."""

    def __init__(self, notebook: str, cell: int | None, source: str, error: str):
        self.notebook = notebook
        self.cell = cell  # index of the cell in the executed notebook (None: outside any cell)
        self.error = error
        where = f"cell {cell}" if cell is not None else "before any cell ran"
        first_line = next((line for line in source.splitlines() if line.strip()), "")
        shown = f" `{first_line.strip()[:60]}`" if first_line else ""
        super().__init__(f"{notebook}: {where}{shown} failed: {error}")


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook of the course or of a sweep."""

    name: str  # the notebook (course) or grid point (sweep) name
    executed: Path  # the executed notebook (written even when it fails)
    output_dir: Path  # the notebook's own output folder
    parameters: dict  # what Papermill injected
    seconds: float
    error: str | None = None  # None when every cell ran
    html: Path | None = None  # the offline HTML export, when asked for
    skipped: bool = False  # a sweep point found done and not run again

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------- parameters


def find_notebooks(directory: str | Path) -> list[Path]:
    """The course notebooks in ``directory`` (``NN_name.ipynb``), in order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such notebook folder")
    return sorted(directory.glob(NOTEBOOK_GLOB))


def notebook_path(path: str | Path) -> Path:
    """The ``.ipynb`` to run: ``path`` itself, or the notebook paired with a jupytext ``.py``."""
    path = Path(path)
    if path.suffix == ".py":
        paired = path.with_suffix(".ipynb")
        if not paired.is_file():
            raise FileNotFoundError(
                f"{path}: no paired notebook {paired.name}; create it with "
                f"`jupytext --sync {path}`"
            )
        path = paired
    if path.suffix != ".ipynb":
        raise ValueError(f"{path}: not a notebook (.ipynb, or a jupytext .py paired with one)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook")
    return path


def declared_parameters(notebook: str | Path) -> dict:
    """The notebook's parameters (name -> default as written), from its ``parameters`` cell."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    return {name: info["default"] for name, info in found.items()}


def parse_value(text: str):
    """A command-line value: a JSON number, ``true``/``false``/``null``, list, or else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_parameter_file(path: str | Path) -> dict:
    """A YAML mapping of parameters. A key that names a notebook (``NN_name``) and holds a
    mapping gives parameters for that notebook alone; every other key applies to every notebook
    that declares it."""
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return values


def split_parameters(
    values: Mapping, notebook_names: Sequence[str]
) -> tuple[dict, dict[str, dict]]:
    """(parameters for every notebook, per-notebook parameters) from one parameter mapping."""
    shared, per_notebook = {}, {}
    for key, value in values.items():
        if key in notebook_names and isinstance(value, Mapping):
            per_notebook[key] = dict(value)
        else:
            shared[key] = value
    return shared, per_notebook


def check_parameters(given: Mapping, declared: Mapping, where: str) -> None:
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; "
            f"the notebook declares: {', '.join(sorted(declared)) or 'none'}"
        )


# ---------------------------------------------------------------------------- execution


@contextmanager
def offline_figures() -> Iterator[None]:
    """Kernels started inside render plotly figures for JupyterLab *and* offline HTML."""
    previous = os.environ.get("PLOTLY_RENDERER")
    if previous is None:
        os.environ["PLOTLY_RENDERER"] = PLOTLY_RENDERER
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PLOTLY_RENDERER", None)


def execute_notebook(
    notebook: str | Path,
    executed: str | Path,
    parameters: Mapping,
    *,
    cwd: str | Path | None = None,
    kernel_name: str = KERNEL_NAME,
) -> float:
    """Execute ``notebook`` with Papermill into ``executed``; returns the seconds it took.

    The kernel runs in ``cwd`` (default: the notebook's folder, so that the relative paths of its
    defaults hold). On failure the executed copy keeps the outputs up to the error and a
    :class:`NotebookError` names the notebook and the cell.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook, executed = Path(notebook), Path(executed)
    executed.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with offline_figures():
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                progress_bar=False,
                cwd=str(cwd if cwd is not None else notebook.parent),
            )
    except PapermillExecutionError as exc:
        raise NotebookError(notebook.name, exc.cell_index, exc.source,
                            f"{exc.ename}: {exc.evalue}") from exc  # fmt: skip
    except Exception as exc:  # the kernel died or could not start
        raise NotebookError(notebook.name, None, "", f"{type(exc).__name__}: {exc}") from exc
    return time.perf_counter() - start


def install_mathjax(out_dir: str | Path) -> str | None:
    """Copy MathJax (from the ``jupyter-server-mathjax`` package) into ``out_dir/mathjax`` once;
    returns the URL of it relative to ``out_dir``, or None (pages then load it from a CDN)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = Path(out_dir) / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def export_html(executed: str | Path, page: str | Path, mathjax_url: str | None = None) -> Path:
    """Write an HTML page of an executed notebook (figures embedded; see the module docstring).

    ``mathjax_url`` (see :func:`install_mathjax`) makes equations render offline too.
    """
    import nbformat
    from nbconvert import HTMLExporter

    executed, page = Path(executed), Path(page)
    options = {"mathjax_url": mathjax_url} if mathjax_url else {}
    body, _ = HTMLExporter(template_name="lab", **options).from_notebook_node(
        nbformat.read(executed, as_version=4)
    )
    write_text(page, body)
    return page


def notebook_title(notebook: str | Path) -> str:
    """The first markdown heading of a notebook, or its file name."""
    import nbformat

    nb = nbformat.read(Path(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return Path(notebook).stem


def _run_one(
    name: str,
    notebook: Path,
    executed: Path,
    output_dir: Path,
    parameters: dict,
    *,
    page: Path | None,
    mathjax_url: str | None = None,
) -> NotebookRun:
    start = time.perf_counter()
    error = None
    try:
        execute_notebook(notebook, executed, parameters)
    except NotebookError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    if page is not None and executed.is_file():
        export_html(executed, page, mathjax_url)
    return NotebookRun(name, executed, output_dir, parameters, seconds, error, page)


def run_course(
    notebooks_dir: str | Path,
    out_dir: str | Path,
    *,
    parameters: Mapping | None = None,
    only: Sequence[str] | None = None,
    html_pages: bool = True,
    progress: Progress | None = print,
) -> list[NotebookRun]:
    """Execute every course notebook of ``notebooks_dir`` in order into ``out_dir``.

    ``out_dir`` gets, per notebook, ``NN_name.ipynb`` (executed), ``NN_name.html`` (offline) and
    ``NN_name/`` (its ``output_dir``), plus ``index.html`` and ``course.json``.
    ``parameters`` (e.g. from :func:`read_parameter_file`) are given to every notebook that
    declares them; a key naming a notebook holds parameters for it alone. ``only`` restricts the
    run to the named notebooks. One progress line per notebook goes to ``progress``.
    """
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir).resolve()
    notebooks = find_notebooks(notebooks_dir)
    names = [nb.stem for nb in notebooks]
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"{notebooks_dir}: no notebook(s) {', '.join(missing)}; "
                             f"the course has: {', '.join(names)}")  # fmt: skip
        notebooks = [nb for nb in notebooks if nb.stem in only]
    if not notebooks:
        raise FileNotFoundError(f"{notebooks_dir}: no course notebooks ({NOTEBOOK_GLOB})")
    shared, per_notebook = split_parameters(parameters or {}, names)
    plans = []
    for nb in notebooks:  # check every notebook's parameters before running any
        declared = declared_parameters(nb)
        if OUTPUT_PARAMETER not in declared:
            raise ValueError(f"{nb}: the parameters cell must declare {OUTPUT_PARAMETER!r}")
        own = per_notebook.get(nb.stem, {})
        check_parameters(own, declared, f"{nb.name} (its own parameters)")
        values = {k: v for k, v in shared.items() if k in declared}
        values.update(own)
        values[OUTPUT_PARAMETER] = str(out_dir / nb.stem)
        plans.append((nb, values))
    undeclared = sorted(set(shared) - {k for _, v in plans for k in v})
    if undeclared:
        raise ValueError(f"parameter(s) {', '.join(undeclared)} declared by no notebook run")

    claim_output_folder(out_dir, COURSE_RUN)
    mathjax_url = install_mathjax(out_dir) if html_pages else None
    runs = []
    for i, (nb, values) in enumerate(plans, 1):
        head = f"[{i}/{len(plans)}] {nb.stem}"
        run = _run_one(
            nb.stem, nb, out_dir / nb.name, Path(values[OUTPUT_PARAMETER]), values,
            page=out_dir / f"{nb.stem}.html" if html_pages else None, mathjax_url=mathjax_url,
        )  # fmt: skip
        runs.append(run)
        if progress:
            state = "ok" if run.ok else "FAILED"
            shown = run.html or run.executed
            progress(f"{head}: {state} in {run.seconds:.1f} s -> {shown}")
            if not run.ok:
                progress(f"    {run.error}")
        write_index(out_dir, runs)
    return runs


def write_index(out_dir: str | Path, runs: Sequence[NotebookRun]) -> Path:
    """``index.html`` (links, status and time of every notebook) and ``course.json``."""
    out_dir = Path(out_dir)
    rows = []
    for run in runs:
        title = notebook_title(run.executed) if run.executed.is_file() else run.name
        page = run.html or run.executed
        link = f'<a href="{html.escape(page.name)}">{html.escape(title)}</a>'
        state = "ok" if run.ok else f'<span class="failed">{html.escape(run.error)}</span>'
        rows.append(
            f"<tr><td>{html.escape(run.name)}</td><td>{link}</td><td>{state}</td>"
            f'<td>{run.seconds:.1f} s</td><td><a href="{html.escape(run.executed.name)}">'
            f"ipynb</a></td></tr>"
        )
    failed = sum(not r.ok for r in runs)
    summary = f"{len(runs)} notebooks, {failed} failed" if failed else f"{len(runs)} notebooks"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>optfusion-lab course</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:.3em .8em;text-align:left;vertical-align:top}}.failed{{color:#b00}}</style>
</head><body><h1>optfusion-lab: the course</h1>
<p>{summary}, executed with Papermill; each page opens offline.</p>
<table><tr><th>notebook</th><th>title</th><th>status</th><th>time</th><th>executed</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    index = out_dir / "index.html"
    write_text(index, page)
    document = [
        {"name": r.name, "ok": r.ok, "error": r.error, "seconds": round(r.seconds, 2),
         "executed": r.executed.name, "html": r.html.name if r.html else None}
        for r in runs
    ]  # fmt: skip
    write_text(out_dir / "course.json", json.dumps(document, indent=2) + "\n")
    return index


# ---------------------------------------------------------------------------- results


def write_results(output_dir: str | Path, results: Mapping) -> Path:
    """Write a notebook's flat ``results.json`` (names to numbers, strings, booleans or None)."""
    nested = sorted(k for k, v in results.items()
                    if not (v is None or isinstance(v, (str, bool, int, float))))  # fmt: skip
    if nested:
        raise ValueError(f"{RESULTS_FILE} must be flat; not a number or string: {nested}")
    path = Path(output_dir) / RESULTS_FILE
    write_text(path, json.dumps(dict(results), indent=2) + "\n")
    return path


def read_results(output_dir: str | Path) -> dict:
    path = Path(output_dir) / RESULTS_FILE
    try:
        values = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(values, dict) or any(isinstance(v, (dict, list)) for v in values.values()):
        raise ValueError(f"{path}: not a flat mapping of names to values")
    return values


# ---------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepResult:
    runs: list[NotebookRun]
    table: object  # pandas.DataFrame: one row per grid point, parameters as columns
    table_path: Path
    figure_path: Path | None

    @property
    def failed(self) -> list[NotebookRun]:
        return [r for r in self.runs if not r.ok]


def grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values, the first parameter varying slowest."""
    if not grid:
        raise ValueError("a sweep needs at least one parameter with values")
    for name, values in grid.items():
        if not values:
            raise ValueError(f"parameter {name!r} has no values")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in product(*grid.values())]


def point_name(point: Mapping) -> str:
    """A file name for a grid point: ``name=value`` pairs joined by ``__``."""

    def clean(value) -> str:
        return re.sub(r"[^A-Za-z0-9._+-]", "-", json.dumps(value).strip('"'))

    return "__".join(f"{name}={clean(value)}" for name, value in point.items())


def point_is_done(executed: Path, output_dir: Path, parameters: Mapping) -> bool:
    """Its executed notebook ran to the end with these parameters and results.json exists."""
    import nbformat

    if not (executed.is_file() and (output_dir / RESULTS_FILE).is_file()):
        return False
    try:
        meta = nbformat.read(executed, as_version=4).metadata.get("papermill", {})
    except Exception:  # a notebook file cut short: run the point again
        return False
    return not meta.get("exception") and meta.get("parameters") == dict(parameters)


def sweep(
    notebook: str | Path,
    grid: Mapping[str, Sequence],
    out_dir: str | Path,
    *,
    parameters: Mapping | None = None,
    progress: Progress | None = print,
) -> SweepResult:
    """Execute ``notebook`` once per point of ``grid`` into ``out_dir`` and gather the results.

    Each point gets ``out_dir/<point>.ipynb`` and its output folder ``out_dir/<point>/``, where
    the notebook writes ``results.json``. ``parameters`` are fixed for every point. A failed point
    is reported and the others still run; points already done are skipped. Writes
    ``results.csv`` (one row per point: the grid's parameters, ``status``, ``error``, then every
    result) and ``summary.html`` (each numeric result against the first parameter).
    """
    notebook = notebook_path(notebook)
    out_dir = Path(out_dir).resolve()
    fixed = dict(parameters or {})
    declared = declared_parameters(notebook)
    if OUTPUT_PARAMETER not in declared:
        raise ValueError(f"{notebook}: the parameters cell must declare {OUTPUT_PARAMETER!r}")
    if OUTPUT_PARAMETER in grid or OUTPUT_PARAMETER in fixed:
        raise ValueError(f"{OUTPUT_PARAMETER} is set by the sweep (one folder per point)")
    overlap = sorted(set(grid) & set(fixed))
    if overlap:
        raise ValueError(f"parameter(s) {', '.join(overlap)} both swept and fixed")
    check_parameters({**fixed, **grid}, declared, notebook.name)
    points = grid_points(grid)
    claim_output_folder(out_dir, SWEEP_RUN)

    runs = []
    for i, point in enumerate(points, 1):
        name = point_name(point)
        executed, output_dir = out_dir / f"{name}.ipynb", out_dir / name
        values = {**fixed, **point, OUTPUT_PARAMETER: str(output_dir)}
        head = f"[{i}/{len(points)}] {name}"
        if point_is_done(executed, output_dir, values):
            runs.append(NotebookRun(name, executed, output_dir, values, 0.0, skipped=True))
            if progress:
                progress(f"{head}: done before, skipped")
            continue
        (output_dir / RESULTS_FILE).unlink(missing_ok=True)  # never gather a stale result
        run = _run_one(name, notebook, executed, output_dir, values, page=None)
        if run.ok and not (output_dir / RESULTS_FILE).is_file():
            error = f"{notebook.name} wrote no {RESULTS_FILE} to {output_dir}"
            run = NotebookRun(name, executed, output_dir, values, run.seconds, error)
        runs.append(run)
        if progress:
            progress(f"{head}: {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s")
            if not run.ok:
                progress(f"    {run.error}")

    table = gather(runs, list(grid))
    table_path = out_dir / "results.csv"
    write_text(table_path, table.to_csv(index=False))
    figure_path = None
    figure = summary_figure(table, list(grid))
    if figure is not None:
        figure_path = out_dir / "summary.html"
        write_text(figure_path, figure.to_html(include_plotlyjs=True, full_html=True))
    if progress:
        failed = sum(not r.ok for r in runs)
        progress(f"{len(runs) - failed}/{len(runs)} points ok -> {table_path}"
                 + (f", {figure_path}" if figure_path else ""))  # fmt: skip
    return SweepResult(runs, table, table_path, figure_path)


def gather(runs: Sequence[NotebookRun], grid_names: Sequence[str]):
    """One tidy row per run: the grid parameters, status, error, then its results.json."""
    import pandas as pd

    rows = []
    for run in runs:
        row = {name: run.parameters[name] for name in grid_names}
        row["status"] = "ok" if run.ok else "failed"
        row["error"] = run.error
        if run.ok:
            results = read_results(run.output_dir)
            clash = sorted(set(results) & set(row) - set(grid_names))
            if clash:
                raise ValueError(f"{run.output_dir / RESULTS_FILE}: reserved name(s) {clash}")
            row.update(results)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_figure(table, grid_names: Sequence[str], max_metrics: int = 6):
    """Each numeric result (one panel each) against the first swept parameter; the other swept
    parameters give the colour. None when no point has a numeric result."""
    import pandas as pd
    import plotly.express as px

    done = table[table["status"] == "ok"]
    metrics = [
        c for c in done.columns
        if c not in (*grid_names, "status", "error")
        and pd.api.types.is_numeric_dtype(done[c]) and not pd.api.types.is_bool_dtype(done[c])
        and done[c].notna().any()
    ][:max_metrics]  # fmt: skip
    if done.empty or not metrics:
        return None
    x, others = grid_names[0], list(grid_names[1:])
    long = done.melt(id_vars=list(grid_names), value_vars=metrics, var_name="result")
    long[x] = long[x].astype(str) if not pd.api.types.is_numeric_dtype(long[x]) else long[x]
    colour = None
    if others:
        long["point"] = long[others].astype(str).agg(", ".join, axis=1)
        colour = "point"
    figure = px.line(long, x=x, y="value", color=colour, facet_row="result", markers=True,
                     title="sweep: " + ", ".join(grid_names))  # fmt: skip
    figure.update_yaxes(matches=None)
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    figure.update_layout(height=max(300, 220 * len(metrics)))
    return figure
