"""Benchmark of the whole ``optfusion-lab prepare`` command on raw Criteo files.

What it measures
----------------
For each size (default 250k, 500k and 1M rows) it runs the real command in a fresh subprocess,
interpreter start-up and imports included::

    python -m optfusion_lab.cli prepare --dataset criteo --input FILE --out OUTDIR

on a synthetic file in the raw Criteo layout (TAB-separated, no header, 40 columns), with a
fresh (deleted) OUTDIR every time so that nothing is reused. Per run it records

- wall seconds (``time.perf_counter`` around the subprocess),
- the child's peak resident memory (GNU ``/usr/bin/time -f %M``; without it, ``VmHWM`` from
  ``/proc/<pid>/status`` polled until the child exits),
- the seconds ``prepare`` itself reports in meta.json (the wall time less start-up),
- the child's CPU seconds (user + sys, from ``getrusage(RUSAGE_CHILDREN)`` deltas),
- the share of all CPUs that *other* processes used meanwhile (``/proc/stat`` busy time less
  the child's CPU), a direct measure of contention next to the load average.

Each size runs ``--repeats`` times; the table shows the best and the median seconds, rows/s
from the best, the least CPU seconds, the largest peak memory, and seconds, CPU and memory
relative to the smallest size (the 250k row by default), so that one can see whether growth is
linear. The targets are printed beside them: >= 200,000 rows/s and < 2 GiB peak memory on the
1M-row file. Wall seconds on a shared machine swing with the other processes; CPU seconds
swing much less.

The input files are made by the project's generator (``optfusion_lab.data.synthetic``) with
``vocab_scale`` 300 by default: the largest categorical fields then hold about 135k distinct
values in 1M rows with a Zipf tail, and threshold 2 keeps roughly 600k features in total,
close to what the real Criteo file gives at that size. The files are cached in
``benchmarks/_data/`` (git-ignored), keyed by rows, seed and scale in the file name; making
the 1M-row file takes a little while the first time. The input is read from the page cache
after the first run, so the numbers are for a warm cache.

How to run
----------
::

    .venv/bin/python benchmarks/bench_prepare.py
    .venv/bin/python benchmarks/bench_prepare.py --sizes 250k 1M --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark_support import busy_cpu_seconds, load, parse_size
from benchmark_support import environment as shared_environment

from optfusion_lab.io import write_json

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "_data"
DEFAULT_SIZES = (250_000, 500_000, 1_000_000)
DEFAULT_VOCAB_SCALE = 300.0
TARGET_ROWS = 1_000_000  # the size the targets apply to
TARGET_ROWS_PER_S = 200_000
TARGET_PEAK_MIB = 2048
GNU_TIME = "/usr/bin/time"
MIB = 1 << 20






def data_file(rows: int, seed: int, vocab_scale: float, data_dir: Path) -> Path:
    """The cached raw Criteo file of ``rows`` rows, generated when missing."""
    path = data_dir / f"criteo_{rows}rows_seed{seed}_scale{vocab_scale:g}.txt"
    if path.is_file():
        return path
    from optfusion_lab.data.synthetic import generate, write

    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"generating {path.name} ...", end=" ", flush=True)
    started = time.perf_counter()
    write(generate("criteo", rows, seed=seed, vocab_scale=vocab_scale), path)  # atomic
    print(f"{time.perf_counter() - started:.1f} s, {path.stat().st_size / MIB:.1f} MiB",
          flush=True)
    return path




def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # sums over waited-for descendants
    return usage.ru_utime + usage.ru_stime


def _run_with_gnu_time(command: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as report:
        started = time.perf_counter()
        done = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *command],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = report.read().split()
    peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else -1
    return seconds, peak_kib, done


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run_with_polling(command: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """Poll VmHWM (monotone) of the child until it exits; the last reading is its peak."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_kib = -1
    while child.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(child.pid) or -1)
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    stdout, stderr = child.communicate()
    return seconds, peak_kib, subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def run_prepare(path: Path, out: Path) -> dict:
    """One timed run of the command on ``path`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "optfusion_lab.cli", "prepare", "--dataset", "criteo",
               "--input", str(path), "--out", str(out)]
    use_time = os.access(GNU_TIME, os.X_OK)
    busy, cpu = busy_cpu_seconds(), _children_cpu_seconds()
    seconds, peak_kib, done = (_run_with_gnu_time if use_time else _run_with_polling)(command)
    cpu = _children_cpu_seconds() - cpu
    busy = None if busy is None else busy_cpu_seconds() - busy
    # CPU the rest of the machine used meanwhile, as a share of all its cores over the run.
    others = None if busy is None else max(0.0, busy - cpu) / (seconds * (os.cpu_count() or 1))
    if done.returncode != 0:
        raise SystemExit(f"prepare failed (exit {done.returncode}):\n{done.stderr}")
    meta = json.loads((out / "meta.json").read_text())
    if meta.get("reused"):
        raise SystemExit(f"prepare reused {out} instead of preparing it")
    return {
        "seconds": seconds,
        "prepare_seconds": meta["seconds"],
        "cpu_seconds": cpu,
        "others_cpu_share": others,
        "peak_rss_mib": peak_kib / 1024 if peak_kib >= 0 else None,
        "num_features": meta["num_features"],
        "rows": sum(meta["num_rows"].values()),
    }


def bench_size(rows: int, path: Path, repeats: int, out: Path, keep: bool) -> dict:
    runs = []
    for i in range(repeats):
        before = load()
        run = run_prepare(path, out)
        run["load_before"], run["load_after"] = before, load()
        runs.append(run)
        rss, others = run["peak_rss_mib"], run["others_cpu_share"]
        print(f"  {rows:>10,} rows  run {i + 1}/{repeats}: {run['seconds']:6.2f} s "
              f"(prepare {run['prepare_seconds']:.2f} s, CPU {run['cpu_seconds']:.2f} s), peak "
              f"{'?' if rss is None else f'{rss:,.0f}'} MiB; load {before[0]:.2f} before; "
              f"other processes used {'?' if others is None else f'{others:.0%}'} of the CPUs",
              flush=True)
        if run["rows"] != rows:
            raise SystemExit(f"prepared {run['rows']:,} rows from a {rows:,}-row file")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    seconds = [r["seconds"] for r in runs]
    peaks = [r["peak_rss_mib"] for r in runs if r["peak_rss_mib"] is not None]
    shares = [r["others_cpu_share"] for r in runs if r["others_cpu_share"] is not None]
    best = min(seconds)
    return {
        "rows": rows,
        "file": str(path),
        "file_mib": path.stat().st_size / MIB,
        "best_s": best,
        "median_s": statistics.median(seconds),
        "best_prepare_s": min(r["prepare_seconds"] for r in runs),
        "min_cpu_s": min(r["cpu_seconds"] for r in runs),
        "others_cpu_share": statistics.median(shares) if shares else None,
        "rows_per_s": rows / best,
        "peak_rss_mib": max(peaks) if peaks else None,
        "num_features": runs[-1]["num_features"],
        "runs": runs,
    }


def _ratio(value, base) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_table(results: list[dict]) -> None:
    base = min(results, key=lambda r: r["rows"])
    header = (
        f"{'rows':>10} {'file MiB':>8} {'best s':>7} {'median s':>8} {'prep s':>7} {'CPU s':>6} "
        f"{'rows/s':>8} {'peak MiB':>8} {'x rows':>6} {'x secs':>6} {'x CPU':>6} {'x mem':>6} "
        f"{'others':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        peak = "?" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:,.0f}"
        others = "?" if r["others_cpu_share"] is None else f"{r['others_cpu_share']:.0%}"
        print(f"{r['rows']:>10,} {r['file_mib']:>8.1f} {r['best_s']:>7.2f} {r['median_s']:>8.2f} "
              f"{r['best_prepare_s']:>7.2f} {r['min_cpu_s']:>6.2f} {r['rows_per_s']:>8,.0f} "
              f"{peak:>8} {_ratio(r['rows'], base['rows']):>6} "
              f"{_ratio(r['best_s'], base['best_s']):>6} "
              f"{_ratio(r['min_cpu_s'], base['min_cpu_s']):>6} "
              f"{_ratio(r['peak_rss_mib'], base['peak_rss_mib']):>6} {others:>6}")
    print(f"best/median s: wall seconds of the whole command, start-up included; prep s: the best "
          f"seconds prepare reports in meta.json (no start-up);\nCPU s: the least user+sys "
          f"seconds of a run; peak MiB: the largest peak RSS of the runs; rows/s from the best "
          f"wall seconds;\nx ...: relative to the {base['rows']:,}-row file; others: median share "
          f"of all CPUs used by other processes during the runs")


def print_targets(results: list[dict]) -> list[dict]:
    target = next((r for r in results if r["rows"] == TARGET_ROWS), None)
    print(f"\ntargets on the {TARGET_ROWS:,}-row file: >= {TARGET_ROWS_PER_S:,} rows/s, "
          f"peak memory < {TARGET_PEAK_MIB / 1024:g} GiB")
    if target is None:
        print(f"  (not measured: add {TARGET_ROWS:,} to --sizes)")
        return []
    peak = target["peak_rss_mib"]
    checks = [
        {"target": f"rows/s >= {TARGET_ROWS_PER_S:,}", "value": round(target["rows_per_s"]),
         "met": target["rows_per_s"] >= TARGET_ROWS_PER_S},
        {"target": f"peak RSS < {TARGET_PEAK_MIB} MiB",
         "value": None if peak is None else round(peak), "met": peak is not None
         and peak < TARGET_PEAK_MIB},
    ]
    for c in checks:
        print(f"  {c['target']:<24} measured {c['value']!s:>10}   "
              f"{'met' if c['met'] else 'NOT met'}")
    print(f"  num_features of the prepared {TARGET_ROWS:,}-row dataset: "
          f"{target['num_features']:,}")
    return checks


def environment() -> dict:
    peak_from = GNU_TIME if os.access(GNU_TIME, os.X_OK) else "/proc/<pid>/status"
    return shared_environment("pyarrow", peak_memory_from=peak_from)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=list(DEFAULT_SIZES),
                        metavar="ROWS", help="numbers of rows, e.g. 250k 500k 1M (the default)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument("--vocab-scale", type=float, default=DEFAULT_VOCAB_SCALE,
                        help=f"generator vocabulary scale (default {DEFAULT_VOCAB_SCALE:g})")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="where the raw files are cached (default benchmarks/_data)")
    parser.add_argument("--keep-output", action="store_true",
                        help="keep the last prepared dataset of each size in the data dir")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    env = environment()
    print(f"optfusion-lab {env['optfusion_lab']}, Python {env['python']}, pyarrow "
          f"{env['pyarrow']}, numpy {env['numpy']}, {env['cpus']} CPUs; peak memory from "
          f"{env['peak_memory_from']}")
    print(f"vocab_scale {args.vocab_scale:g}, seed {args.seed}, repeats {args.repeats}; "
          f"load average at start {load()}")
    sizes = sorted(set(args.sizes))
    paths = {rows: data_file(rows, args.seed, args.vocab_scale, args.data_dir) for rows in sizes}
    load_start = load()

    results = []
    for rows in sizes:
        out = args.data_dir / f"prepared_{paths[rows].stem}"
        results.append(bench_size(rows, paths[rows], args.repeats, out, args.keep_output))
    load_end = load()

    print_table(results)
    checks = print_targets(results)
    print(f"\nload average (1, 5, 15 min): {load_start} before the runs, {load_end} after; "
          f"{env['cpus']} CPUs")

    if args.json:
        report = {
            "benchmark": "prepare",
            "environment": env,
            "vocab_scale": args.vocab_scale,
            "seed": args.seed,
            "repeats": args.repeats,
            "load_before": load_start,
            "load_after": load_end,
            "targets": checks,
            "results": results,
        }
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
