"""Training throughput and peak memory of every baseline, against a lean plain-PyTorch DCN.

What it measures
----------------
For every model of ``optfusion_lab.models.MODELS`` and for the lean DCN of ``lean_dcn.py`` (the
yardstick) it runs training steps on a synthetic Criteo-shaped dataset and reports

- samples/s of the *training steps only*, at steady state: the first ``--warmup`` steps are
  skipped, then at least ``--steps`` steps and at least ``--min-seconds`` seconds are timed
  (steps that straddle an epoch end, i.e. a validation pass, are never counted);
- the peak resident memory of the process (``VmHWM`` from ``/proc/self/status``): every model
  runs in a fresh subprocess, so the figure is per model. ``data+model MiB`` is the peak less
  the resident memory after the imports (interpreter, torch), i.e. what data, model, gradients,
  optimizer state and activations add;
- the number of parameters and the ratio of samples/s to the lean DCN's.

The library models are timed inside the library's real training loop: ``optfusion_lab.train.fit``
itself runs (``make_optimizer`` Adam groups, ``BatchLoader`` batches of int32 ids, forward,
BCE, backward, optimizer step and fit's per-step bookkeeping), and a callback records a
timestamp after every optimizer step and stops the run once enough steps are timed. The lean
DCN is timed the same way inside its own plain loop (``lean_dcn.train_lean``). Two diagnostic
rows separate the model from the loop: ``dcn@lean-loop`` (the library's DCN trained by the lean
loop) and ``lean-dcn@fit`` (the lean model trained by the library's ``fit``).

Every configuration runs ``--repeats`` times, interleaved (round-robin, rotated per repeat) so
that slow drifts of the machine's load hit all models alike; the table gives the median and
the best samples/s. The target is printed explicitly: the library's ``dcn`` should reach at
least 0.95x the lean DCN's samples/s (median against median). With ``--profile`` (or
automatically when the target is missed) both DCNs are profiled with ``torch.profiler`` and the
heaviest operators are printed side by side.

Settings: batch 4096, embedding dim 16, MLP 400-400-400, 3 cross layers, CIN sizes the
library's default (F, F, F), learning rate / L2 of the Criteo preset per model (the lean DCN
takes ``dcn``'s), CPU, ``--threads`` torch threads (2 by default). The data: the project's
generator (``generate("criteo", rows, seed=0, vocab_scale=300)``) written to
``benchmarks/_data/criteo_<rows>rows_seed0_scale300.txt`` (the same cache as
``bench_prepare.py``) and prepared once (threshold 2, split seed 42) into
``benchmarks/_data/bench_train_<file stem>/``; both are reused by later runs.

CPU timings on a shared machine are noisy, and badly so for multi-threaded torch: one busy
process beside a 2-thread run on 2 cores can slow it down five-fold (every parallel region waits
for the preempted thread). So every run measures the share of all CPUs that *other* processes
used during its timed steps (``/proc/stat`` busy time less its own CPU time); before a run the
script waits (up to ``--quiet-timeout`` s) for a quiet machine, and a run in which others used
``--max-others`` (10%) or more is marked contended and retried (``--retries``). Only clean runs
enter the table, unless a model has none (the ``clean`` column says so). The load average before
and after every run is printed too. Compare numbers only within one invocation.

How to run
----------
::

    .venv/bin/python benchmarks/bench_train.py                       # all models, 500k rows
    .venv/bin/python benchmarks/bench_train.py --models dcn lean-dcn --repeats 5 --profile
    .venv/bin/python benchmarks/bench_train.py --rows 1M --steps 40 --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmark_support import busy_cpu_seconds, load, parse_size, record, write_report
from benchmark_support import environment as shared_environment

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "_data"
DEFAULT_ROWS = 500_000
VOCAB_SCALE = 300.0
DATA_SEED = 0
BATCH_SIZE = 4096
EMBED_DIM = 16
MLP_DIMS = (400, 400, 400)
CROSS_LAYERS = 3
TARGET_RATIO = 0.95  # our dcn's samples/s must reach this fraction of the lean DCN's
LEAN = "lean-dcn"
DIAGNOSTICS = ("dcn@lean-loop", "lean-dcn@fit")  # model@loop crossings that locate a gap
RESULT_PREFIX = "RESULT "
MIB = 1 << 20


# --- helpers shared by the parent and the workers ------------------------------------------------




def _proc_status_kib(key: str) -> int | None:
    """``VmHWM`` / ``VmRSS`` of this process in KiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None






# --- data --------------------------------------------------------------------------------------


def prepared_dataset(rows: int, data_dir: Path) -> Path:
    """The cached prepared dataset of ``rows`` synthetic Criteo rows (generated when missing)."""
    from optfusion_lab.data.prepare import PrepareConfig, prepare
    from optfusion_lab.data.synthetic import generate, write

    raw = data_dir / f"criteo_{rows}rows_seed{DATA_SEED}_scale{VOCAB_SCALE:g}.txt"
    if not raw.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"generating {raw.name} ...", end=" ", flush=True)
        started = time.perf_counter()
        write(generate("criteo", rows, seed=DATA_SEED, vocab_scale=VOCAB_SCALE), raw)  # atomic
        print(f"{time.perf_counter() - started:.1f} s", flush=True)
    out = data_dir / f"bench_train_{raw.stem}"
    started = time.perf_counter()
    meta = prepare(raw, out, PrepareConfig("criteo", threshold=2, seed=42))  # reused when valid
    how = "reused" if meta.get("reused") else f"prepared in {time.perf_counter() - started:.1f} s"
    print(f"data: {out.relative_to(HERE.parent)} ({how}): {meta['num_rows']} rows, "
          f"{meta['num_features']:,} features, {meta['num_fields']} fields")
    return out


# --- the worker: one model in one fresh process ---------------------------------------------------


class StopTiming(Exception):
    """Raised by the step timer once enough steps are timed; ends the training run."""


class StepTimer:
    """Timestamps after every optimizer step; optional torch.profiler window after the warm-up."""

    def __init__(self, warmup: int, steps: int, min_seconds: float, profile_steps: int = 0):
        self.warmup, self.steps, self.min_seconds = warmup, steps, min_seconds
        self.profile_steps = profile_steps
        self.marks: list[tuple[int, float, float]] = []  # (epoch, wall, process CPU)
        self.busy_start: float | None = None
        self.busy_end: float | None = None
        self.profiler = None

    def __call__(self, step: int, epoch: int) -> None:
        self.marks.append((epoch, time.perf_counter(), time.process_time()))
        if step == self.warmup:
            self.busy_start = busy_cpu_seconds()
            if self.profile_steps:
                from torch.profiler import ProfilerActivity, profile

                self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
                self.profiler.start()
        timed = step - self.warmup
        if self.profiler is not None and timed >= self.profile_steps:
            self.profiler.stop()
            self.busy_end = busy_cpu_seconds()
            raise StopTiming
        if timed >= self.steps and self.marks[-1][1] - self.marks[self.warmup - 1][1] >= (
            self.min_seconds
        ):
            self.busy_end = busy_cpu_seconds()
            raise StopTiming

    def summary(self, batch_size: int) -> dict:
        marks = self.marks[self.warmup - 1 :]  # the mark closing the last warm-up step opens
        wall = cpu = 0.0
        steps = 0
        for (e0, t0, c0), (e1, t1, c1) in zip(marks, marks[1:], strict=False):
            if e0 == e1:  # a step across an epoch end includes a validation pass: skip it
                wall, cpu, steps = wall + t1 - t0, cpu + c1 - c0, steps + 1
        others = None
        if self.busy_start is not None and self.busy_end is not None and wall > 0:
            busy = self.busy_end - self.busy_start
            others = max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1))
        return {
            "timed_steps": steps,
            "timed_seconds": wall,
            "samples_per_s": steps * batch_size / wall if wall > 0 else None,
            "ms_per_step": 1000 * wall / steps if steps else None,
            "cpu_per_wall": cpu / wall if wall > 0 else None,
            "others_cpu_share": others,
        }


def worker(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from lean_dcn import LeanConfig, build_lean, train_lean

    from optfusion_lab.data.dataset import PreparedData
    from optfusion_lab.models import ModelConfig, build_model
    from optfusion_lab.presets import PRESETS
    from optfusion_lab.train import Callback, TrainConfig, count_parameters, fit, seed_everything

    rss_after_imports = _proc_status_kib("VmRSS")  # interpreter, torch, sklearn, the library
    model_name, _, loop = args.worker.partition("@")
    loop = loop or ("lean-loop" if model_name == LEAN else "fit")
    data = PreparedData.open(args.data)
    lr, l2 = PRESETS["criteo"].learning_rates["dcn" if model_name == LEAN else model_name]
    seed_everything(0)
    if model_name == LEAN:
        lean_cfg = LeanConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS)
        model = build_lean(data.num_features, data.num_fields, lean_cfg)
    else:
        model_cfg = ModelConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS)
        model = build_model(model_name, data.num_features, data.num_fields, model_cfg)
    timer = StepTimer(args.warmup, args.steps, args.min_seconds, args.profile_steps)
    # epochs and patience high enough that the run only ends through StopTiming
    if loop == "fit":
        class TimerCallback(Callback):
            essential = True  # its StopTiming must end fit (a plain callback's error is dropped)

            def on_step(self, state) -> None:
                timer(state.step, state.epoch)

        train_cfg = TrainConfig(epochs=1000, batch_size=BATCH_SIZE, lr_emb=lr, l2_emb=l2, lr_nn=lr,
                                l2_nn=l2, patience=1000, device="cpu", threads=args.threads,
                                seed=0, progress=False)
    else:
        lean_cfg = LeanConfig(batch_size=BATCH_SIZE, epochs=1000, patience=1000, lr_emb=lr,
                              l2_emb=l2, lr_nn=lr, l2_nn=l2)
    try:
        if loop == "fit":
            fit(model, data, train_cfg, callbacks=[TimerCallback()])
        else:
            train_lean(model, data, lean_cfg, on_step=timer)
        raise SystemExit("training ended before enough steps were timed; use more --rows")
    except StopTiming:
        pass
    peak = _proc_status_kib("VmHWM")
    result = {
        "model": args.worker,
        "loop": loop,
        "parameters": count_parameters(model),
        "threads": torch.get_num_threads(),
        "peak_rss_mib": peak / 1024 if peak else None,
        "rss_after_imports_mib": rss_after_imports / 1024 if rss_after_imports else None,
        **timer.summary(BATCH_SIZE),
    }
    if timer.profiler is not None:
        averages = timer.profiler.key_averages()
        result["profile_table"] = averages.table(sort_by="self_cpu_time_total", row_limit=22,
                                                 max_name_column_width=38)
        result["profile_ops"] = {
            e.key: {"self_ms": e.self_cpu_time_total / 1000, "calls": e.count}
            for e in averages
        }
        result["profile_wall_ms"] = result["ms_per_step"]
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


# --- the parent: run the workers, print the table ------------------------------------------------


def run_worker(name: str, args: argparse.Namespace, data: Path, profile_steps: int = 0) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data", str(data),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps",
               str(args.steps), "--min-seconds", str(args.min_seconds),
               "--profile-steps", str(profile_steps)]
    before = load()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result.update(load_before=before, load_after=load(), process_seconds=seconds)
    return result


def others_share_now(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (this process sleeps meanwhile: it is others)."""
    busy = busy_cpu_seconds()
    if busy is None:
        return None
    time.sleep(seconds)
    return (busy_cpu_seconds() - busy) / (seconds * (os.cpu_count() or 1))


def wait_quiet(max_share: float, timeout: float) -> float | None:
    """Wait (up to ``timeout`` s) until other processes use less than ``max_share`` of the CPUs."""
    deadline = time.perf_counter() + timeout
    share = others_share_now()
    while share is not None and share >= max_share and time.perf_counter() < deadline:
        share = others_share_now(2.0)
    return share


def timed_run(name: str, args: argparse.Namespace, data: Path, profile_steps: int = 0) -> dict:
    """One run of ``name``; a run disturbed by other processes is retried (quiet machine first)."""
    for attempt in range(1, args.retries + 2):
        wait_quiet(args.max_others, args.quiet_timeout)
        r = run_worker(name, args, data, profile_steps)
        share = r["others_cpu_share"]
        r["contended"] = share is not None and share >= args.max_others
        r["attempt"] = attempt
        if not r["contended"] or attempt == args.retries + 1:
            return r
        print(f"    {name}: other processes used {share:.0%} of the CPUs during the timed steps "
              f"({r['samples_per_s']:,.0f} samples/s); retrying", flush=True)
    raise AssertionError("unreachable")


def fmt(value, spec: str, missing: str = "?") -> str:
    return missing if value is None else format(value, spec)


def summarize(all_runs: list[dict]) -> dict:
    """Median/best/min over the uncontended runs (over all runs when every run was contended)."""
    clean = [r for r in all_runs if not r["contended"]]
    runs = clean or all_runs
    rates = [r["samples_per_s"] for r in runs]
    return {
        "clean_runs": len(clean),
        "model": runs[0]["model"],
        "loop": runs[0]["loop"],
        "parameters": runs[0]["parameters"],
        "median_samples_per_s": statistics.median(rates),
        "best_samples_per_s": max(rates),
        "min_samples_per_s": min(rates),
        "median_ms_per_step": statistics.median(r["ms_per_step"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "data_model_mib": max(r["peak_rss_mib"] - r["rss_after_imports_mib"] for r in runs),
        "cpu_per_wall": statistics.median(r["cpu_per_wall"] for r in runs),
        "others_cpu_share": max((r["others_cpu_share"] or 0.0) for r in runs),
        "runs": all_runs,
    }


def train_records(rows: list[dict], target: dict | None, args) -> list[dict]:
    """The rows of the benchmark table (``benchmark_support.write_report``): the DCN target,
    then every model's median samples/s and peak RSS."""
    settings = f"{args.rows:,} rows, batch {BATCH_SIZE}, {args.threads} threads"
    records = []
    if target is not None:
        clean = {r["model"]: r["clean_runs"] for r in rows}
        records.append(record(
            "dcn_vs_lean_dcn_samples_ratio", round(target["ratio_median"], 4), "x",
            f">= {TARGET_RATIO}", target["met"],
            f"{settings}; median over clean runs ({clean.get('dcn')} dcn, {clean.get(LEAN)} "
            f"lean); best against best {target['ratio_best']:.3f}x"))
    for r in rows:
        note = f"{settings}; {r['parameters']:,} parameters; {r['clean_runs']} clean runs"
        records.append(record(f"{r['model']}_samples_per_s", round(r["median_samples_per_s"]),
                              "samples/s", note=note))
        records.append(record(f"{r['model']}_peak_rss", round(r["peak_rss_mib"]), "MiB",
                              note=f"VmHWM of the model's own process; {settings}"))
    return records


def print_table(rows: list[dict]) -> None:
    lean = next((r for r in rows if r["model"] == LEAN), None)
    header = (f"{'model':<15} {'loop':<9} {'params':>10} {'samples/s':>10} {'best':>8} "
              f"{'min':>8} {'ms/step':>8} {'peak RSS MiB':>12} {'data+model':>10} "
              f"{'x lean':>7} {'CPU/wall':>8} {'others':>6} {'clean':>5}")
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = (r["median_samples_per_s"] / lean["median_samples_per_s"]) if lean else None
        print(f"{r['model']:<15} {r['loop']:<9} {r['parameters']:>10,} "
              f"{r['median_samples_per_s']:>10,.0f} {r['best_samples_per_s']:>8,.0f} "
              f"{r['min_samples_per_s']:>8,.0f} {r['median_ms_per_step']:>8.1f} "
              f"{r['peak_rss_mib']:>12,.0f} {r['data_model_mib']:>10,.0f} "
              f"{fmt(ratio, '>6.2f'):>6}x {r['cpu_per_wall']:>8.2f} "
              f"{r['others_cpu_share']:>6.0%} {r['clean_runs']:>2}/{len(r['runs'])}")
    print("samples/s: median over the clean runs of steady-state training samples/s (best, min "
          "beside it); x lean: median / lean-dcn median;\npeak RSS: VmHWM of the model's own "
          "process; data+model: peak less the RSS after imports; CPU/wall: process CPU seconds "
          "per wall second\nin the timed steps (close to --threads when nothing else competes); "
          "others: largest share of all CPUs other processes used in a counted run's timed "
          "steps;\nclean: runs in which other processes used less than --max-others of the CPUs "
          "(only those are counted, unless there are none)")


def print_profiles(profiles: dict[str, dict], top: int = 18) -> None:
    for name, result in profiles.items():
        print(f"\n--- torch.profiler, {name}: {result['timed_steps']} steps, "
              f"{result['ms_per_step']:.1f} ms/step with the profiler on; other processes used "
              f"{fmt(result['others_cpu_share'], '.0%')} of the CPUs, load "
              f"{result['load_before'][0]:.2f} before ---")
        print(result["profile_table"])
    if len(profiles) != 2:
        return
    (name_a, a), (name_b, b) = profiles.items()
    ops_a, ops_b = a["profile_ops"], b["profile_ops"]
    steps_a, steps_b = a["timed_steps"], b["timed_steps"]
    keys = sorted(set(ops_a) | set(ops_b), key=lambda k: -max(
        ops_a.get(k, {}).get("self_ms", 0) / steps_a, ops_b.get(k, {}).get("self_ms", 0) / steps_b))
    print(f"\nself CPU ms per step by operator ({name_a} vs {name_b}; calls per step in brackets)")
    print(f"{'operator':<42} {name_a:>18} {name_b:>18} {'difference':>10}")
    for key in keys[:top]:
        ea, eb = ops_a.get(key, {}), ops_b.get(key, {})
        ms_a, ms_b = ea.get("self_ms", 0) / steps_a, eb.get("self_ms", 0) / steps_b
        calls_a, calls_b = ea.get("calls", 0) / steps_a, eb.get("calls", 0) / steps_b
        print(f"{key[:42]:<42} {ms_a:>9.2f} ({calls_a:>5.1f}) {ms_b:>9.2f} ({calls_b:>5.1f}) "
              f"{ms_a - ms_b:>+10.2f}")
    total_a = sum(e["self_ms"] for e in ops_a.values()) / steps_a
    total_b = sum(e["self_ms"] for e in ops_b.values()) / steps_b
    print(f"{'all operators':<42} {total_a:>9.2f}         {total_b:>9.2f}         "
          f"{total_a - total_b:>+10.2f}")


def environment() -> dict:
    import torch

    return shared_environment("torch", mkldnn=torch.backends.mkldnn.is_available())


def main(argv: list[str] | None = None) -> int:
    from optfusion_lab.models import MODELS

    names = [*MODELS, LEAN, *DIAGNOSTICS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=parse_size, default=DEFAULT_ROWS,
                        help=f"rows of the synthetic dataset, e.g. 500k (default {DEFAULT_ROWS:,})")
    parser.add_argument("--models", nargs="+", choices=names, default=names, metavar="MODEL",
                        help=f"models to time (default all): {', '.join(names)}")
    parser.add_argument("--steps", type=int, default=20, help="least timed steps (default 20)")
    parser.add_argument("--min-seconds", type=float, default=8.0,
                        help="least timed seconds per run (default 8)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per model, interleaved (default 3)")
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="a run in which other processes use this share of all CPUs or more "
                             "is contended and retried (default 0.10)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a contended run (default 3)")
    parser.add_argument("--quiet-timeout", type=float, default=60.0,
                        help="seconds to wait for a quiet machine before a run (default 60)")
    parser.add_argument("--profile", action="store_true",
                        help="profile dcn and the lean DCN even when the target is met")
    parser.add_argument("--profile-steps", type=int, default=10,
                        help="steps recorded by the profiler (default 10)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="cache of generated and prepared data (default benchmarks/_data)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="a quick check: 100k rows, dcn and lean-dcn, 10 steps, 2 repeats")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one model
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.rows, args.models, args.steps, args.min_seconds = 100_000, ["dcn", LEAN], 10, 2.0
        args.repeats, args.retries, args.quiet_timeout, args.warmup = 2, 0, 5.0, 3
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")

    env = environment()
    print(f"optfusion-lab {env['optfusion_lab']}, torch {env['torch']}, Python {env['python']}, "
          f"{env['cpus']} CPUs, {args.threads} torch threads; load average at start {load()}")
    print(f"batch {BATCH_SIZE}, embed dim {EMBED_DIM}, MLP {'-'.join(map(str, MLP_DIMS))}, "
          f"{CROSS_LAYERS} cross layers, CIN (F, F, F); warm-up {args.warmup} steps, then >= "
          f"{args.steps} steps and >= {args.min_seconds:g} s timed; {args.repeats} repeats")
    data = prepared_dataset(args.rows, args.data_dir)
    models = list(dict.fromkeys(args.models))
    load_start = load()
    runs: dict[str, list[dict]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        shift = repeat % len(models)
        for name in models[shift:] + models[:shift]:
            r = timed_run(name, args, data)
            runs[name].append(r)
            print(f"  run {repeat + 1}/{args.repeats} {name:<15} {r['samples_per_s']:>8,.0f} "
                  f"samples/s ({r['timed_steps']} steps, {r['ms_per_step']:.0f} ms/step), peak "
                  f"{r['peak_rss_mib']:,.0f} MiB; load {r['load_before'][0]:.2f} before, "
                  f"{r['load_after'][0]:.2f} after; others used "
                  f"{fmt(r['others_cpu_share'], '.0%')} of the CPUs"
                  f"{' (CONTENDED)' if r['contended'] else ''}", flush=True)
    load_end = load()
    rows = [summarize(runs[name]) for name in models]
    print_table(rows)

    by_name = {r["model"]: r for r in rows}
    target = None
    if "dcn" in by_name and LEAN in by_name:
        ratio = by_name["dcn"]["median_samples_per_s"] / by_name[LEAN]["median_samples_per_s"]
        best_ratio = by_name["dcn"]["best_samples_per_s"] / by_name[LEAN]["best_samples_per_s"]
        met = ratio >= TARGET_RATIO
        target = {"target": f"dcn samples/s >= {TARGET_RATIO} x lean-dcn", "ratio_median": ratio,
                  "ratio_best": best_ratio, "met": met}
        print(f"\nTARGET: our dcn reaches {ratio:.2f}x the lean DCN's samples/s (median; "
              f"{best_ratio:.2f}x best against best): target >= {TARGET_RATIO}x "
              f"{'MET' if met else 'NOT MET'}")
    else:
        print("\nTARGET: not measured (needs both dcn and lean-dcn in --models)")

    profiles = {}
    if args.profile or (target is not None and not target["met"]):
        print(f"\nprofiling dcn (library fit) and lean-dcn (lean loop), {args.profile_steps} "
              f"steps each after {args.warmup} warm-up steps ...")
        for name in ("dcn", LEAN):
            profiles[name] = timed_run(name, args, data, profile_steps=args.profile_steps)
        print_profiles(profiles)

    print(f"\nload average (1, 5, 15 min): {load_start} before the runs, {load_end} after; "
          f"{env['cpus']} CPUs. CPU timings on a shared machine are noisy: compare rows of one "
          f"invocation only.")
    if args.json:
        write_report(
            args.json, "train", train_records(rows, target, args),
            environment=env,
            settings={"rows": args.rows, "batch_size": BATCH_SIZE, "embed_dim": EMBED_DIM,
                      "mlp_dims": MLP_DIMS, "cross_layers": CROSS_LAYERS,
                      "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
                      "min_seconds": args.min_seconds, "repeats": args.repeats,
                      "max_others": args.max_others, "retries": args.retries,
                      "data": str(data)},
            load_before=load_start,
            load_after=load_end,
            target=target,
            results=rows,
            profiles={k: {kk: vv for kk, vv in v.items() if kk != "profile_table"}
                      for k, v in profiles.items()},
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
