"""Benchmark of the whole ``optfusion-lab prepare`` command against pyarrow's own parse.

What it measures
----------------
For each size (default 250k, 500k and 1M rows) and each repeat, two things run back to back,
so that both see the same load:

1. the **baseline**, in this process: ``pyarrow.csv.read_csv`` of the uncompressed file,
   multi-threaded, with the Criteo TSV schema (label int8, I1..I13 int64, C1..C26 string),
   then ``pyarrow.compute.dictionary_encode`` of the 26 categorical columns. No validation, no
   transform, no split, no writing: the cost of parsing the text, which is the floor for
   ``prepare``;
2. the **command**, in a fresh subprocess, interpreter start-up and imports included::

       python -m optfusion_lab.cli prepare --dataset criteo --input FILE --out OUTDIR

   with OUTDIR deleted before every run so that nothing is reused.

Both sides get the same threads: ``--threads N`` (default: every CPU) sizes pyarrow's CPU pool
for the baseline (``pyarrow.set_cpu_count``) and for the command (``OMP_NUM_THREADS=N`` in its
environment, which is what pyarrow reads at start-up; ``prepare`` sizes its own worker pools
from the same number). Without it, ``OMP_NUM_THREADS=1`` in the benchmark's environment would
leave the baseline's "multi-threaded" parse on one thread while the command's pipeline threads
still used a second core.

The order of the two alternates between repeats. Per command run it records the wall seconds,
the child's peak resident memory (GNU ``/usr/bin/time -f %M``; without it, ``VmHWM`` from
``/proc/<pid>/status`` polled until the child exits), the seconds ``prepare`` reports in
meta.json (the wall time less start-up), the child's CPU seconds, and the share of all CPUs
that *other* processes used meanwhile (``/proc/stat`` busy time less the child's CPU).

Targets, on the largest size measured (1M rows by default):

- ratio = command seconds / baseline seconds of the same repeat, median over repeats,
  at most 1.3;
- peak RSS of the command below 2 GiB;
- linear in rows: the marginal seconds per row (and MiB per row) from the middle to the largest
  size at most 1.25x those from the smallest to the middle size (medians; start-up and other
  fixed costs cancel in the differences).

``--code DIR`` (repeatable) times the command with ``PYTHONPATH=DIR`` (and ``python -P``, so
that the working directory does not shadow it), e.g. ``--code .
--code /work/main`` measures this checkout and another one in the same run, interleaved,
each against the same baseline runs.

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

    .venv/bin/python benchmarks/bench_prepare.py                      # 250k, 500k, 1M; 3 repeats
    .venv/bin/python benchmarks/bench_prepare.py --quick              # 250k only, under a minute
    .venv/bin/python benchmarks/bench_prepare.py --code . --code ../other-checkout --json out.json
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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from benchmark_support import busy_cpu_seconds, load, parse_size
from benchmark_support import environment as shared_environment

from optfusion_lab.data.schemas import CRITEO
from optfusion_lab.io import write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = HERE / "_data"
DEFAULT_SIZES = (250_000, 500_000, 1_000_000)
QUICK_SIZES = (250_000,)
DEFAULT_VOCAB_SCALE = 300.0
TARGET_RATIO = 1.3  # command seconds / baseline seconds, at most
TARGET_PEAK_MIB = 2048
TARGET_LINEARITY = 1.25  # marginal cost per row, larger step / smaller step, at most
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


# ---------------------------------------------------------------- the baseline


def baseline_types() -> dict:
    types = {CRITEO.label_column: pa.int8()}
    types.update({c: pa.int64() for c in CRITEO.numeric_fields})
    types.update({c: pa.string() for c in CRITEO.fields if c not in CRITEO.numeric_fields})
    return types


def run_baseline(path: Path, threads: int) -> dict:
    """pyarrow's multi-threaded parse of ``path`` plus dictionary encoding of C1..C26."""
    pa.set_cpu_count(threads)
    types = baseline_types()
    categorical = [c for c in CRITEO.fields if c not in CRITEO.numeric_fields]
    cpu = time.process_time()
    started = time.perf_counter()
    table = pa_csv.read_csv(
        path,
        pa_csv.ReadOptions(column_names=list(CRITEO.raw_columns), use_threads=True),
        pa_csv.ParseOptions(delimiter="\t", quote_char=False),
        pa_csv.ConvertOptions(column_types=types),
    )
    encoded = [pc.dictionary_encode(table.column(c)) for c in categorical]
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    rows = table.num_rows
    del table, encoded
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows}


# ---------------------------------------------------------------- the command


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # sums over waited-for descendants
    return usage.ru_utime + usage.ru_stime


def _run_with_gnu_time(command: list[str], env: dict) -> tuple[float, int, object]:
    with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as report:
        started = time.perf_counter()
        done = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *command],
                              capture_output=True, text=True, env=env)
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


def _run_with_polling(command: list[str], env: dict) -> tuple[float, int, object]:
    """Poll VmHWM (monotone) of the child until it exits; the last reading is its peak."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    peak_kib = -1
    while child.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(child.pid) or -1)
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    stdout, stderr = child.communicate()
    return seconds, peak_kib, subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def run_prepare(path: Path, out: Path, code: Path, threads: int) -> dict:
    """One timed run of the command (the checkout ``code``) on ``path`` into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    # -P: without it, ``python -m`` puts the working directory first on sys.path, so a run from
    # a checkout's root would time that checkout whatever PYTHONPATH says.
    command = [sys.executable, "-P", "-m", "optfusion_lab.cli", "prepare", "--dataset", "criteo",
               "--input", str(path), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}
    use_time = os.access(GNU_TIME, os.X_OK)
    busy, cpu = busy_cpu_seconds(), _children_cpu_seconds()
    seconds, peak_kib, done = (_run_with_gnu_time if use_time else _run_with_polling)(command, env)
    cpu = _children_cpu_seconds() - cpu
    busy = None if busy is None else busy_cpu_seconds() - busy
    # CPU the rest of the machine used meanwhile, as a share of all its cores over the run.
    others = None if busy is None else max(0.0, busy - cpu) / (seconds * (os.cpu_count() or 1))
    if done.returncode != 0:
        raise SystemExit(f"prepare ({code}) failed (exit {done.returncode}):\n{done.stderr}")
    meta = json.loads((out / "meta.json").read_text())
    if meta.get("reused"):
        raise SystemExit(f"prepare reused {out} instead of preparing it")
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": seconds,
        "prepare_seconds": meta["seconds"],
        "cpu_seconds": cpu,
        "others_cpu_share": others,
        "peak_rss_mib": peak_kib / 1024 if peak_kib >= 0 else None,
        "num_features": meta["num_features"],
        "rows": sum(meta["num_rows"].values()),
    }


# ---------------------------------------------------------------- one size


def bench_size(rows: int, path: Path, repeats: int, codes: list[Path], data_dir: Path,
               threads: int) -> dict:
    """``repeats`` rounds of baseline and command(s), alternating which goes first."""
    baseline, commands = [], {str(c): [] for c in codes}
    for i in range(repeats):
        before = load()
        order = ["baseline", *map(str, codes)]
        if i % 2:
            order.reverse()
        for what in order:
            if what == "baseline":
                run = run_baseline(path, threads)
                baseline.append(run)
                print(f"  {rows:>10,} rows  run {i + 1}/{repeats}: baseline "
                      f"{run['seconds']:6.2f} s (CPU {run['cpu_seconds']:.2f} s)", flush=True)
                continue
            out = data_dir / f"prepared_{path.stem}"
            run = run_prepare(path, out, Path(what), threads)
            run["load_before"] = before
            commands[what].append(run)
            rss, others = run["peak_rss_mib"], run["others_cpu_share"]
            print(f"  {rows:>10,} rows  run {i + 1}/{repeats}: {_label(what)} "
                  f"{run['seconds']:6.2f} s (prepare {run['prepare_seconds']:.2f} s, CPU "
                  f"{run['cpu_seconds']:.2f} s), peak {'?' if rss is None else f'{rss:,.0f}'} "
                  f"MiB; load {before[0]:.2f}; others used "
                  f"{'?' if others is None else f'{others:.0%}'} of the CPUs", flush=True)
            if run["rows"] != rows:
                raise SystemExit(f"prepared {run['rows']:,} rows from a {rows:,}-row file")
    summary = {
        "rows": rows,
        "threads": threads,
        "file": str(path),
        "file_mib": path.stat().st_size / MIB,
        "baseline_median_s": statistics.median(r["seconds"] for r in baseline),
        "baseline_median_cpu_s": statistics.median(r["cpu_seconds"] for r in baseline),
        "baseline_runs": baseline,
        "commands": {},
    }
    for code, runs in commands.items():
        ratios = [r["seconds"] / b["seconds"] for r, b in zip(runs, baseline, strict=True)]
        peaks = [r["peak_rss_mib"] for r in runs if r["peak_rss_mib"] is not None]
        shares = [r["others_cpu_share"] for r in runs if r["others_cpu_share"] is not None]
        summary["commands"][code] = {
            "median_s": statistics.median(r["seconds"] for r in runs),
            "median_prepare_s": statistics.median(r["prepare_seconds"] for r in runs),
            "median_cpu_s": statistics.median(r["cpu_seconds"] for r in runs),
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
            "rows_per_s": rows / statistics.median(r["seconds"] for r in runs),
            "peak_rss_mib": max(peaks) if peaks else None,
            "others_cpu_share": statistics.median(shares) if shares else None,
            "num_features": runs[-1]["num_features"],
            "runs": runs,
        }
    return summary


def _label(code: str) -> str:
    path = Path(code).resolve()
    return "this checkout" if path == ROOT else str(path)


# ---------------------------------------------------------------- report


def marginal_ratio(results: list[dict], value) -> float | None:
    """Marginal cost per row from the middle to the largest size over that from the smallest
    to the middle; 1.0 is linear. None with fewer than three sizes."""
    if len(results) < 3:
        return None
    small, middle, large = results[0], results[len(results) // 2], results[-1]
    first = (value(middle) - value(small)) / (middle["rows"] - small["rows"])
    second = (value(large) - value(middle)) / (large["rows"] - middle["rows"])
    return second / first if first > 0 else None


def print_table(results: list[dict], codes: list[Path]) -> None:
    header = (f"{'rows':>10} {'file MiB':>8} {'base s':>7} {'command':<28} {'median s':>8} "
              f"{'prep s':>7} {'CPU s':>6} {'rows/s':>8} {'peak MiB':>8} {'ratio':>6} "
              f"{'others':>6}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        for code in map(str, codes):
            c = r["commands"][code]
            peak = "?" if c["peak_rss_mib"] is None else f"{c['peak_rss_mib']:,.0f}"
            others = "?" if c["others_cpu_share"] is None else f"{c['others_cpu_share']:.0%}"
            print(f"{r['rows']:>10,} {r['file_mib']:>8.1f} {r['baseline_median_s']:>7.2f} "
                  f"{_label(code)[-28:]:<28} {c['median_s']:>8.2f} {c['median_prepare_s']:>7.2f} "
                  f"{c['median_cpu_s']:>6.2f} {c['rows_per_s']:>8,.0f} {peak:>8} "
                  f"{c['ratio_median']:>5.2f}x {others:>6}")
    print("base s: median seconds of pyarrow's multi-threaded read_csv + dictionary_encode of "
          "C1..C26 (in process);\nmedian s: median wall seconds of the whole command, start-up "
          "included; prep s: the seconds prepare reports (no start-up);\nCPU s: median user+sys "
          "seconds; peak MiB: the largest peak RSS of the runs; ratio: median over repeats of "
          "command s / base s of the same repeat;\nothers: median share of all CPUs used by "
          "other processes during the command runs")


def records_for(results: list[dict], code: str, label: str) -> list[dict]:
    """The target checks of one checkout, as benchmark records."""
    largest = results[-1]
    c = largest["commands"][code]
    at = f"{largest['rows']:,} rows"
    peak = c["peak_rss_mib"]
    records = [
        {"metric": f"prepare_vs_pyarrow_parse_ratio{label}", "value": round(c["ratio_median"], 3),
         "unit": "x", "target": f"<= {TARGET_RATIO}", "met": c["ratio_median"] <= TARGET_RATIO,
         "note": f"{at}; whole command (start-up included) / pyarrow read_csv + dictionary_encode"
                 f", median of {len(c['ratios'])} paired repeats; "
                 f"{largest['threads']} pyarrow threads on both sides"},
        {"metric": f"prepare_vs_pyarrow_cpu_ratio{label}",
         "value": round(c["median_cpu_s"] / largest["baseline_median_cpu_s"], 3), "unit": "x",
         "target": None, "met": None,
         "note": f"{at}; median CPU seconds (user+sys, all threads) of the command / the baseline's"
                 "; less sensitive to other processes than the wall ratio"},
        {"metric": f"prepare_rows_per_s{label}", "value": round(c["rows_per_s"]),
         "unit": "rows/s", "target": None, "met": None,
         "note": f"{at}; from the median wall seconds of the whole command"},
        {"metric": f"pyarrow_parse_rows_per_s{label}",
         "value": round(largest["rows"] / largest["baseline_median_s"]), "unit": "rows/s",
         "target": None, "met": None, "note": f"{at}; the baseline"},
        {"metric": f"prepare_peak_rss{label}", "value": None if peak is None else round(peak),
         "unit": "MiB", "target": f"< {TARGET_PEAK_MIB}",
         "met": peak is not None and peak < TARGET_PEAK_MIB, "note": at},
    ]
    sizes = ", ".join(f"{r['rows']:,}" for r in results)
    for name, what, value in (
        ("seconds", "seconds (prepare's own, median)",
         lambda r: r["commands"][code]["median_prepare_s"]),
        ("memory", "MiB of peak RSS", lambda r: r["commands"][code]["peak_rss_mib"] or 0.0),
    ):
        ratio = marginal_ratio(results, value)
        note = (f"marginal {what} per row from the middle to the largest size over that from the "
                f"smallest to the middle ({sizes} rows)")
        records.append({
            "metric": f"prepare_linearity_{name}{label}",
            "value": None if ratio is None else round(ratio, 3), "unit": "x",
            "target": f"<= {TARGET_LINEARITY}",
            "met": None if ratio is None else ratio <= TARGET_LINEARITY,
            "note": note if ratio is not None else "needs three sizes",
        })
    return records


def print_records(records: list[dict]) -> None:
    print()
    for r in records:
        met = {True: "met", False: "NOT met", None: "-"}[r["met"]]
        value = "?" if r["value"] is None else f"{r['value']:,}"
        print(f"  {r['metric']:<44} {value:>10} {r['unit']:<6} target {r['target'] or '-':<8} "
              f"{met:<8} {r['note']}")


def environment() -> dict:
    peak_from = GNU_TIME if os.access(GNU_TIME, os.X_OK) else "/proc/<pid>/status"
    return shared_environment("pyarrow", peak_memory_from=peak_from)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="ROWS",
                        help="numbers of rows, e.g. 250k 500k 1M (the default)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="250k rows only (under a minute once the file is cached)")
    parser.add_argument("--code", type=Path, action="append", metavar="DIR",
                        help="checkout whose command is timed (PYTHONPATH=DIR); repeatable; "
                             "default: this checkout")
    parser.add_argument("--vocab-scale", type=float, default=DEFAULT_VOCAB_SCALE,
                        help=f"generator vocabulary scale (default {DEFAULT_VOCAB_SCALE:g})")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="where the raw files are cached (default benchmarks/_data)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="pyarrow CPU threads of both the baseline and the command "
                             "(default: every CPU)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    sizes = sorted(set(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)))
    codes = [c.resolve() for c in (args.code or [ROOT])]

    env = environment()
    print(f"optfusion-lab {env['optfusion_lab']}, Python {env['python']}, pyarrow "
          f"{env['pyarrow']}, numpy {env['numpy']}, {env['cpus']} CPUs; peak memory from "
          f"{env['peak_memory_from']}")
    print(f"vocab_scale {args.vocab_scale:g}, seed {args.seed}, repeats {args.repeats}, "
          f"{args.threads} pyarrow threads on both sides; "
          f"load average at start {load()}")
    paths = {rows: data_file(rows, args.seed, args.vocab_scale, args.data_dir) for rows in sizes}
    load_start = load()
    results = [bench_size(rows, paths[rows], args.repeats, codes, args.data_dir, args.threads)
               for rows in sizes]
    load_end = load()

    print_table(results, codes)
    records = []
    for i, code in enumerate(codes):
        records += records_for(results, str(code), "" if i == 0 else f"[{_label(str(code))}]")
    print_records(records)
    print(f"\nload average (1, 5, 15 min): {load_start} before the runs, {load_end} after; "
          f"{env['cpus']} CPUs")

    if args.json:
        report = {
            "benchmark": "prepare",
            "machine": {**env, "load_before": load_start, "load_after": load_end,
                        "threads": args.threads},
            "records": records,
            "details": {
                "vocab_scale": args.vocab_scale,
                "seed": args.seed,
                "repeats": args.repeats,
                "threads": args.threads,
                "codes": [str(c) for c in codes],
                "results": results,
            },
        }
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
