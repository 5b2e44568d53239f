"""The ``course`` and ``sweep`` subcommands of ``optfusion-lab`` (thin: see :mod:`.course`).

Papermill and nbconvert come with the ``notebooks`` extra (``pip install -e ".[notebooks]"``);
they are imported when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_course_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "course",
        help="execute the notebook course with Papermill and export offline HTML",
        description="Execute every course notebook (NN_name.ipynb) of --notebooks in order with "
        "Papermill, and write into --out each executed notebook, an offline HTML page of it "
        "and index.html. A failing notebook is named with its cell; the others still run, "
        "and the exit status is 1.",
    )
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"), metavar="DIR",
                   help="folder of the course notebooks (default notebooks)")
    p.add_argument("--out", type=Path, default=Path("runs/course"), metavar="DIR",
                   help="output folder (default runs/course)")
    add_parameter_arguments(p)
    p.add_argument("--only", nargs="+", metavar="NN_name",
                   help="run only these notebooks (names without .ipynb)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    p.set_defaults(func=run_course_command)
    return p


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep",
        help="execute one notebook over a grid of parameters and gather its results",
        description="Execute NOTEBOOK with Papermill once per point of the grid given by -p "
        "(one executed notebook per point, named by its parameters), then gather each point's "
        "results.json into DIR/results.csv (parameters as columns) and draw DIR/summary.html. "
        "A failed point is reported and the others still run; a rerun skips points already "
        "done.",
    )
    p.add_argument("notebook", type=Path, metavar="NOTEBOOK",
                   help="a notebook (.ipynb, or its paired jupytext .py)")
    p.add_argument("-p", "--param", nargs="+", action="append", required=True,
                   metavar=("NAME", "VALUE"), dest="grid",
                   help="a swept parameter and its values (repeat -p for a grid)")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter fixed for every point (repeatable)")
    p.add_argument("--parameters", type=Path, metavar="FILE",
                   help="a YAML file of parameters fixed for every point")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.set_defaults(func=run_sweep_command)
    return p


def add_parameter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parameters", type=Path, metavar="FILE",
                   help="a YAML file of parameters (e.g. notebooks/ci_parameters.yaml)")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter for every notebook that declares it (repeatable; "
                   "applied after --parameters)")


def _parameters(args) -> dict:
    from optfusion_lab.course import parse_value, read_parameter_file

    values = read_parameter_file(args.parameters) if args.parameters else {}
    values.update({name: parse_value(value) for name, value in args.set})
    return values


def run_course_command(args) -> int:
    from optfusion_lab.course import run_course

    runs = run_course(args.notebooks, args.out, parameters=_parameters(args), only=args.only,
                      html_pages=not args.no_html)  # fmt: skip
    failed = [r for r in runs if not r.ok]
    total = sum(r.seconds for r in runs)
    index = (args.out / "index.html").resolve()
    print(f"{len(runs) - len(failed)}/{len(runs)} notebooks ran in {total / 60:.1f} min; "
          f"open {index}")  # fmt: skip
    for run in failed:
        print(f"failed: {run.error}")
    return 1 if failed else 0


def run_sweep_command(args) -> int:
    from optfusion_lab.course import parse_value, sweep

    grid = {}
    for name, *values in args.grid:
        if not values:
            raise ValueError(f"-p {name}: give at least one value")
        if name in grid:
            raise ValueError(f"-p {name}: given twice")
        grid[name] = [parse_value(v) for v in values]
    result = sweep(args.notebook, grid, args.out, parameters=_parameters(args))
    for run in result.failed:
        print(f"failed: {run.error}")
    return 1 if result.failed else 0
