"""Cost of the live monitor: a search's slowdown with it, its step handler and its redraw.

What it measures
----------------
1. **Slowdown** of a search at notebook 03's default parameters (the embedded teacher sample,
   preset ``tiny``, D = 4, L = 3, batch 256, arch_lr 0.1, alpha init 0.5, history every 5
   steps, CPU, one thread) with a live :class:`~optfusion_lab.widgets.LiveMonitor` (its
   plotly ``FigureWidget`` panel built, redrawing at most 4 times a second) reading the
   architecture every ``--every`` steps (default 1), against the same search without it.
   With and without alternate epoch by epoch inside one long search (ABBA order over pairs of
   epochs, after one warm-up epoch; early stopping off, so every epoch runs): the monitor is
   called in the "with" epochs only and keeps what it read, so by the last pair it holds the
   snapshots of every "with" epoch (at least 2,000 at the defaults). An epoch's time is the wall
   time from the end of the previous epoch to the end of its own (steps, validation and the
   epoch-end handlers). Figure: the median over pairs of (with / without - 1); target < 10 %.
2. **on_step**: mean seconds per call of the monitor's step handler on the notebook's supernet
   (one host copy of alpha and of the operation weights per call at ``every`` 1), without a
   panel, so no redraw.
3. **Redraw**: median seconds of one redraw of the live panel (every line's points replaced)
   when the monitor holds 2,000 and 20,000 snapshots (the two interleaved); target: flat (20k
   within 1.5x of 2k), since the buffers keep at most ``capacity`` points per line.

CPU timings on a shared machine are noisy; the load average is recorded with the figures.

How to run
----------
::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_monitor.py --json monitor.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_monitor.py --quick   # 1 pair
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_support import busy_cpu_seconds, environment, load  # noqa: E402

from optfusion_lab.experiments import prepared_data, search_configs  # noqa: E402
from optfusion_lab.fusion_search import search  # noqa: E402
from optfusion_lab.io import write_json  # noqa: E402
from optfusion_lab.models.supernet import FusionNetwork  # noqa: E402
from optfusion_lab.train import Callback, TrainState  # noqa: E402
from optfusion_lab.widgets import LiveMonitor  # noqa: E402
from optfusion_lab.widgets.monitor import architecture_of, structure_of_arguments  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "_data" / "notebook03_teacher"
# Notebook 03's parameters cell (notebooks/03_one_shot_search.py).
NOTEBOOK_03 = dict(preset="tiny", embed_dim=4, num_layers=3, alpha_init=0.5, arch_lr=0.1,
                   batch_size=256, history_every=5, seed=0, device="cpu", threads=1)
MIN_SNAPSHOTS = 2_000
TARGET_SLOWDOWN = 10.0  # percent
FLAT = 1.5  # the redraw at 20k snapshots may cost at most this many times the one at 2k


class Alternate(Callback):
    """Forwards the events of every other epoch to ``monitor`` (ABBA over pairs, after one
    warm-up epoch without it) and records each epoch's wall time and whether it was monitored."""

    def __init__(self, monitor: LiveMonitor):
        self.monitor = monitor
        self.epochs: list[tuple[int, bool, float]] = []  # (epoch, monitored, seconds)
        self.last = time.perf_counter()

    @staticmethod
    def monitored(epoch: int) -> bool:
        if epoch == 1:
            return False  # warm-up
        pair, position = divmod(epoch - 2, 2)
        return position == (0 if pair % 2 == 0 else 1)

    def on_fit_start(self, state: TrainState) -> None:
        self.last = time.perf_counter()

    def on_step(self, state: TrainState) -> None:
        if self.monitored(state.epoch):
            self.monitor.on_step(state)

    def on_epoch_end(self, state: TrainState) -> None:
        on = self.monitored(state.epoch)
        if on:
            self.monitor.on_epoch_end(state)
        now = time.perf_counter()
        self.epochs.append((state.epoch, on, now - self.last))
        self.last = now


def slowdown(data, pairs: int, every: int) -> dict:
    supernet_cfg, train_cfg, search_cfg = search_configs(**NOTEBOOK_03)
    epochs = 1 + 2 * pairs
    train_cfg = dataclasses.replace(train_cfg, epochs=epochs, patience=epochs)
    monitor = LiveMonitor(every=every, live=True)
    # As LiveMonitor.start does: the lines are known from the arguments before the run, and the
    # panel's FigureWidgets are built with them (then updated as in a notebook).
    monitor.expect(structure_of_arguments((data, supernet_cfg, train_cfg, search_cfg), {}))
    monitor._live_view()
    alternate = Alternate(monitor)
    started = time.perf_counter()
    search(data, supernet_cfg, train_cfg, search_cfg, callbacks=[alternate])
    wall = time.perf_counter() - started
    rows = alternate.epochs[1:]  # without the warm-up epoch
    ratios, with_s, without_s = [], [], []
    for i in range(0, len(rows) - 1, 2):
        (_, on_a, a), (_, _, b) = rows[i], rows[i + 1]
        monitored, plain = (a, b) if on_a else (b, a)
        ratios.append(monitored / plain)
        with_s.append(monitored)
        without_s.append(plain)
    steps_per_epoch = math.ceil(len(data.arrays("train")[1]) / train_cfg.batch_size)
    return {
        "slowdown_percent": 100 * (statistics.median(ratios) - 1),
        "epoch_seconds_with": statistics.median(with_s),
        "epoch_seconds_without": statistics.median(without_s),
        "pairs": len(ratios),
        "snapshots": monitor.alpha.offered,
        "steps_per_epoch": steps_per_epoch,
        "search_seconds": wall,
    }


def notebook_supernet(data) -> FusionNetwork:
    supernet_cfg, _, _ = search_configs(**NOTEBOOK_03)
    torch.manual_seed(0)
    return FusionNetwork(data.num_features, data.num_fields, supernet_cfg)


def on_step_seconds(net: FusionNetwork, calls: int) -> float:
    monitor = LiveMonitor(every=1, live=False)  # no panel: the handler alone
    states = [TrainState(net, epoch=1, step=s, steps_per_epoch=calls, loss=0.5)
              for s in range(1, calls + 1)]
    monitor.on_step(states[0])  # the first call sets up the buffers
    started = time.perf_counter()
    for state in states[1:]:
        monitor.on_step(state)
    return (time.perf_counter() - started) / (calls - 1)


def filled_monitor(net: FusionNetwork, snapshots: int) -> LiveMonitor:
    """A live monitor (panel built) holding ``snapshots`` snapshots of ``net``'s architecture."""
    monitor = LiveMonitor(every=1, live=True)
    structure, alpha, weights = architecture_of(net)
    rng = np.random.default_rng(0)
    for step in range(snapshots):
        monitor.add_architecture(step, structure, alpha + rng.normal(0, 0.01, alpha.shape),
                                 weights)
        if step % 100 == 0:
            monitor.losses.append(step, [0.5])
    monitor._live_view()
    return monitor


def redraw_seconds(net: FusionNetwork, sizes: tuple[int, ...], repeats: int) -> dict:
    """Median seconds of one redraw per history length; the lengths' redraws interleave."""
    monitors = {n: filled_monitor(net, n) for n in sizes}
    times = {n: [] for n in sizes}
    for r in range(repeats):
        for n in sizes if r % 2 == 0 else sizes[::-1]:
            monitor = monitors[n]
            monitor.version += 1  # something new to show
            started = time.perf_counter()
            monitor._view.draw(monitor)
            times[n].append(time.perf_counter() - started)
    return {n: statistics.median(t) for n, t in times.items()}


def record(metric, value, unit, target=None, met=None, note=""):
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=32,
                   help="pairs of epochs with / without the monitor (default 32: 2,016 snapshots)")
    p.add_argument("--every", type=int, default=1, help="the monitor reads every N steps")
    p.add_argument("--calls", type=int, default=2_000, help="on_step calls timed")
    p.add_argument("--redraws", type=int, default=20, help="redraws timed per history length")
    p.add_argument("--quick", action="store_true",
                   help="1 pair, fewer calls (< 1 minute on an idle machine)")
    p.add_argument("--json", type=Path, metavar="PATH")
    args = p.parse_args()
    if args.quick:
        args.pairs, args.calls, args.redraws = 1, 500, 10
    torch.set_num_threads(1)
    data = prepared_data("teacher", DATA_DIR)
    before_load, before_cpu, before = load(), busy_cpu_seconds(), time.perf_counter()

    net = notebook_supernet(data)
    step_s = on_step_seconds(net, args.calls)
    redraw = redraw_seconds(net, (2_000, 20_000), args.redraws)
    found = slowdown(data, args.pairs, args.every)
    elapsed = time.perf_counter() - before
    after_cpu = busy_cpu_seconds()
    others = None if before_cpu is None else round(after_cpu - before_cpu - elapsed, 1)

    growth = redraw[20_000] / redraw[2_000]
    enough = found["snapshots"] >= MIN_SNAPSHOTS
    records = [
        record("search_slowdown", round(found["slowdown_percent"], 2), "percent",
               f"< {TARGET_SLOWDOWN:g}", found["slowdown_percent"] < TARGET_SLOWDOWN and enough,
               f"median over {found['pairs']} ABBA pairs of epochs ({found['steps_per_epoch']} "
               f"steps each) of with/without - 1, monitor every {args.every} step(s), live panel"
               + ("" if enough else "; fewer snapshots than the target asks (--quick?)")),
        record("snapshots", found["snapshots"], "snapshots", f">= {MIN_SNAPSHOTS}", enough,
               "alpha snapshots the monitor held at the end"),
        record("epoch_seconds_with", round(found["epoch_seconds_with"], 3), "s", None, None,
               "median wall seconds of a monitored epoch"),
        record("epoch_seconds_without", round(found["epoch_seconds_without"], 3), "s", None,
               None, "median wall seconds of an epoch without the monitor"),
        record("on_step", round(step_s * 1e6, 2), "us", None, None,
               f"mean per call over {args.calls} calls, notebook 03's supernet, no panel"),
        record("redraw_2k", round(redraw[2_000] * 1e3, 2), "ms", None, None,
               f"median of {args.redraws} interleaved redraws of the live panel, 2k snapshots"),
        record("redraw_20k", round(redraw[20_000] * 1e3, 2), "ms", None, None,
               f"median of {args.redraws} interleaved redraws of the live panel, 20k snapshots"),
        record("redraw_growth_20k_over_2k", round(growth, 3), "ratio", f"<= {FLAT:g}",
               growth <= FLAT, "flat: the buffers keep at most capacity points per line"),
    ]
    for r in records:
        met = "" if r["met"] is None else ("  met" if r["met"] else "  NOT met")
        target = f"  (target {r['target']})" if r["target"] else ""
        print(f"{r['metric']:<28}{r['value']:>12} {r['unit']:<10}{target}{met}")
    machine = environment("torch", "plotly", "ipywidgets", load_before=before_load,
                          load_after=load(), other_processes_cpu_seconds=others,
                          seconds=round(elapsed, 1))
    print(f"load average {before_load} -> {machine['load_after']}; other processes used "
          f"{others} CPU s during the {elapsed:.0f} s run")
    if args.json is not None:
        write_json(args.json, {"benchmark": "bench_monitor", "machine": machine,
                               "arguments": {k: str(v) if isinstance(v, Path) else v
                                             for k, v in vars(args).items()},
                               "records": records})


if __name__ == "__main__":
    main()
