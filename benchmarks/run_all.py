"""Run every benchmark script and collect one results file and one markdown table.

``make bench`` runs this (``make bench-quick``: with ``--quick``). Each ``benchmarks/bench_*.py``
present (the known ones first, in the order of ``ORDER``, then any other) runs in its own
subprocess with ``--json PATH``; in ``--quick`` mode with its ``--quick`` flag (a script without
one is reported as skipped). What a script supports is read from its ``--help`` at run time, so
the runner works whichever scripts exist.

Every script's JSON follows the contract ``{"benchmark", "machine", "records": [{"metric",
"value", "unit", "target", "met", "note"}]}`` (see ``benchmark_support.write_report``); the
numeric fields of an older document without ``records`` are listed instead. A script that fails,
times out, lacks ``--json`` or writes no JSON is a row of the table with the reason, never a
crash of the runner; a document with a ``skipped`` field (e.g. ``bench_gpu.py`` without CUDA)
is reported as skipped.

Outputs (``--out``, default ``benchmarks/``): ``results.json`` and ``RESULTS.md`` (quick mode:
``results-quick.json`` and ``RESULTS-quick.md``), plus every script's own JSON and log in
``_runs/``. The table is printed at the end too.

    .venv/bin/python benchmarks/run_all.py --quick              # under 5 minutes
    .venv/bin/python benchmarks/run_all.py --only bench_settle bench_gpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from benchmark_support import machine  # noqa: E402

ORDER = ("bench_prepare", "bench_train", "bench_search", "bench_settle", "bench_sparse",
         "bench_monitor", "bench_gpu")
# Small settings for scripts that have no --quick flag (yet): each must take well under a minute.
# Options of the full run (not --quick): bench_search also measures the compiled supernet and DCN
# (TrainConfig.compile), where its targets are met; compiling costs a few minutes.
FULL_ARGS = {"bench_search": ["--compile"]}
QUICK_TIMEOUT = 150  # seconds per script in --quick mode
QUICK_TIMEOUT_NOTE = "raise it with --timeout on a busy machine"
SKIP_KEYS = {"environment", "machine", "settings", "profiles", "runs", "details", "load_before",
             "load_after", "setting", "per_seed", "seeds"}
LEGACY_LIMIT = 40  # numeric fields listed from a document without records


def scripts(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts present: ORDER first, then any other bench_*.py, by name."""
    present = {p.stem: p for p in HERE.glob("bench_*.py")}
    names = [n for n in ORDER if n in present] + sorted(set(present) - set(ORDER))
    if only:
        wanted = [n.removesuffix(".py") for n in only]
        names = [n for n in names if n in wanted]
    return [present[n] for n in names]


def child_env() -> dict:
    """The environment of a script: this checkout's library first on the path, one thread
    per process unless the caller chose otherwise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def options(script: Path) -> set[str]:
    """The flags among --json and --quick that ``script`` defines (an argparse
    ``add_argument("--json", ...)`` in its source: reading it costs no process start)."""
    source = script.read_text(errors="replace")
    return {flag for flag in ("--json", "--quick")
            if re.search(r"add_argument\(\s*[\"']" + flag + r"[\"']", source)}


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def legacy_records(document: dict) -> list[dict]:
    """Records from a document written before the records contract: every target check (a
    mapping with ``met``) and the numeric fields, by dotted path."""
    found: list[dict] = []

    def walk(value, path: str) -> None:
        if len(found) >= LEGACY_LIMIT:
            return
        if isinstance(value, dict):
            if "met" in value and "target" in value:
                number = next((value[k] for k in ("value", "ratio_median", "ratio")
                               if isinstance(value.get(k), int | float)), None)
                found.append({"metric": path or "target", "value": number, "unit": "",
                              "target": str(value["target"]), "met": bool(value["met"]),
                              "note": "target check"})
                return
            for key, item in value.items():
                if key not in SKIP_KEYS:
                    walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                label = i
                if isinstance(item, dict):
                    label = next((item[k] for k in ("model", "name", "kind", "rows")
                                  if k in item), i)
                walk(item, f"{path}[{label}]")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append({"metric": path, "value": value, "unit": "", "target": None,
                          "met": None, "note": "from a document without records"})

    walk(document, "")
    return found


def run_script(script: Path, quick: bool, work: Path, timeout: float | None) -> dict:
    """Run one script; return its entry of results.json (never raises for the script's sake)."""
    name = script.stem
    entry = {"name": name, "script": f"benchmarks/{script.name}", "status": "", "note": "",
             "args": [], "seconds": None, "returncode": None, "records": []}
    flags = options(script)
    if "--json" not in flags:
        entry.update(status="skipped", note="no --json option: cannot collect its figures")
        return entry
    args = [] if quick else list(FULL_ARGS.get(name, []))
    if quick:
        if "--quick" in flags:
            args = ["--quick"]
        else:
            entry.update(status="skipped", note="no --quick option: not run in quick mode")
            return entry
    out = work / f"{name}.json"
    log = work / f"{name}.log"
    out.unlink(missing_ok=True)
    entry["args"] = args
    started = time.perf_counter()
    with open(log, "w") as f:
        try:
            done = subprocess.run([sys.executable, str(script), *args, "--json", str(out)],
                                  stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO,
                                  env=child_env())
            entry["returncode"] = done.returncode
        except subprocess.TimeoutExpired:
            entry["seconds"] = round(time.perf_counter() - started, 1)
            entry.update(status="timeout", note=f"killed after {timeout:g} s; "
                         f"{QUICK_TIMEOUT_NOTE} (log: {log})")
            return entry
    entry["seconds"] = round(time.perf_counter() - started, 1)
    output = log.read_text(errors="replace")
    if done.returncode != 0:
        entry.update(status="failed",
                     note=f"exit {done.returncode}: {tail(output)} (log: {log})")
        return entry
    if not out.is_file():
        entry.update(status="failed", note=f"wrote no JSON: {tail(output, 2)} (log: {log})")
        return entry
    try:
        document = json.loads(out.read_text())
    except ValueError as exc:
        entry.update(status="failed", note=f"unreadable JSON ({exc})")
        return entry
    if document.get("skipped"):
        entry.update(status="skipped", note=str(document["skipped"]))
        return entry
    records = document.get("records")
    if isinstance(records, list):
        entry["records"] = records
        entry["status"] = "ok"
    else:
        entry["records"] = legacy_records(document)
        entry["status"] = "ok"
        entry["note"] = " ".join(filter(None, [entry["note"], "older JSON without records: "
                                               "its numeric fields are listed"]))
    entry["machine"] = document.get("machine")
    return entry


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(value) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    m = report["machine"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    lines = [
        f"# Benchmark results ({report['mode']})",
        "",
        f"Written by `benchmarks/run_all.py{' --quick' if report['mode'] == 'quick' else ''}` "
        f"on {report['finished']} in {report['seconds']:.0f} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), GPU {gpu}, "
        f"torch {m['torch']}, Python {m['python']}; load average {m['load_average']} at the "
        f"start, {report['load_after']} at the end.",
        "",
        "| benchmark | status | seconds | note |",
        "| --- | --- | ---: | --- |",
    ]
    for b in report["benchmarks"]:
        lines.append(f"| {b['name']} | {b['status']} | {cell(b['seconds'])} | {cell(b['note'])} |")
    for b in report["benchmarks"]:
        if not b["records"]:
            continue
        lines += ["", f"## {b['name']}", "",
                  "| metric | value | unit | target | met | note |",
                  "| --- | ---: | --- | --- | --- | --- |"]
        for r in b["records"]:
            lines.append(f"| {cell(r.get('metric'))} | {cell(r.get('value'))} | "
                         f"{cell(r.get('unit'))} | {cell(r.get('target'))} | "
                         f"{cell(r.get('met'))} | {cell(r.get('note'))} |")
    return "\n".join(lines) + "\n"


def print_table(report: dict) -> None:
    print(f"\n{'benchmark':<16}{'status':<9}{'s':>7}  note")
    for b in report["benchmarks"]:
        print(f"{b['name']:<16}{b['status']:<9}{fmt(b['seconds']):>7}  {b['note']}")
    for b in report["benchmarks"]:
        for r in b["records"]:
            met = {True: "MET", False: "NOT MET", None: ""}[r.get("met")]
            target = f"  target {r['target']}" if r.get("target") else ""
            print(f"  {b['name']:<14}{str(r.get('metric')):<52}{fmt(r.get('value')):>12} "
                  f"{str(r.get('unit') or ''):<10}{met:<8}{target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="every script's --quick variant (the whole run under 5 minutes)")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT",
                        help="run these scripts only (e.g. bench_settle bench_gpu)")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where results(.json|.md) go (default benchmarks/)")
    parser.add_argument("--timeout", type=float,
                        help=f"seconds per script (default: none; {QUICK_TIMEOUT} with --quick)")
    args = parser.parse_args(argv)
    timeout = args.timeout or (QUICK_TIMEOUT if args.quick else None)
    work = args.out / "_runs"
    work.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    report = {"format": "optfusion-bench", "mode": mode, "machine": machine(),
              "started": datetime.now(UTC).isoformat(timespec="seconds"),
              "benchmarks": []}
    started = time.perf_counter()
    found = scripts(args.only)
    print(f"{len(found)} benchmark scripts ({mode}): {', '.join(p.stem for p in found)}")
    for script in found:
        print(f"\n== {script.stem} ...", flush=True)
        entry = run_script(script, args.quick, work, timeout)
        report["benchmarks"].append(entry)
        print(f"   {entry['status']} in {fmt(entry['seconds']) or '-'} s {entry['note']}",
              flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["load_after"] = list(machine()["load_average"])
    suffix = "-quick" if args.quick else ""
    results = args.out / f"results{suffix}.json"
    sys.path.insert(0, str(REPO))
    from optfusion_lab.io import write_json

    write_json(results, report)
    (args.out / f"RESULTS{suffix}.md").write_text(markdown(report))
    print_table(report)
    print(f"\n{report['seconds']:.0f} s; wrote {results} and {args.out / f'RESULTS{suffix}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
