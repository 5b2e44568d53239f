"""Search cost with and without the settled-architecture stop (``SearchConfig.settle_steps``).

What it measures
----------------
On the embedded teacher data (``data_samples/teacher_kdd12.tsv.gz``, prepared with the library)
and, when ``OPTFUSION_REAL_SAMPLES`` is set, on the shared real Criteo rows
(``$OPTFUSION_REAL_SAMPLES/criteo/kaggle2014criteo_train.tiny.csv``, prepared into a temporary
folder: the rows never enter the repository), for every seed:

1. the one-shot search as the paper runs it (no settle window) and the same search with the
   window (``--stop-when-settled``), in alternating order: wall seconds of each, search start to
   genotype (``SearchResult.search_seconds``: training, validation and the supernet's test
   evaluation), and the saved fraction ``1 - settled / full`` of that seed;
2. one DCN training run of the same epoch budget (``optfusion_lab.cost.reference_dcn_config``:
   3 CrossNet-v1 layers beside an MLP of three layers of width d; every epoch runs), timed between
   the two searches, so that each search's time is also a multiple of a DCN run measured in the
   same minute;
3. the derived (hard) genotype of each search retrained from scratch with the same seed (the
   same settings, early stopping with patience 1): its test AUC. With the same seed the two
   retrainings differ only by their genotype, so ``settled - full`` is a paired difference; the
   script reports its mean over the seeds with the standard error ``sd / sqrt(n)``.

The window defaults to half an epoch of steps (``--window-epochs``; ``--settle-steps`` sets it
in steps). The search settings are the ``tiny`` search preset's (D = 4, L = 3, the four
operations, lr 3e-3, arch_lr 0.1, up to 3 epochs with patience 1, batch 256 on the teacher data);
on the 1,600 training rows of the real Criteo sample the batch is 64 (25 steps an epoch).

CPU timings on a shared machine are noisy: the load average is recorded, and every ratio is
formed within one seed's interleaved runs.

How to run
----------
::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_settle.py --seeds 0 1 2 3 4 --json s.json
    .venv/bin/python benchmarks/bench_settle.py --quick          # one seed, teacher only, 1 epoch
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_support import load, machine, record, write_report  # noqa: E402

from optfusion_lab.cost import reference_dcn_config  # noqa: E402
from optfusion_lab.data import PrepareConfig, prepare  # noqa: E402
from optfusion_lab.data.dataset import PreparedData  # noqa: E402
from optfusion_lab.fusion_search import SearchConfig, retrain, search  # noqa: E402
from optfusion_lab.models import build_model  # noqa: E402
from optfusion_lab.models.supernet import SupernetConfig  # noqa: E402
from optfusion_lab.train import TrainConfig, fit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "data_samples" / "teacher_kdd12.tsv.gz"
REAL_CRITEO = Path("criteo") / "kaggle2014criteo_train.tiny.csv"


@dataclass(frozen=True)
class Setting:
    """One dataset's search settings."""

    name: str
    raw: Path
    dataset: str
    batch_size: int
    epochs: int = 3
    embed_dim: int = 4
    num_layers: int = 3
    lr: float = 3e-3
    arch_lr: float = 0.1


def settings(args) -> list[Setting]:
    chosen = [Setting("teacher", TEACHER, "kdd12", batch_size=256)]
    real = os.environ.get("OPTFUSION_REAL_SAMPLES")
    if real and (Path(real) / REAL_CRITEO).is_file() and not args.teacher_only:
        chosen.append(Setting("criteo-real", Path(real) / REAL_CRITEO, "criteo", batch_size=64))
    elif "criteo-real" in args.datasets:
        print("criteo-real skipped: OPTFUSION_REAL_SAMPLES is not set or lacks "
              f"{REAL_CRITEO}")
    chosen = [s for s in chosen if s.name in args.datasets]
    if args.epochs is not None or args.layers is not None:
        chosen = [dataclasses.replace(s, epochs=args.epochs or s.epochs,
                                      num_layers=args.layers or s.num_layers) for s in chosen]
    return chosen


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error (sd / sqrt(n), ddof 1; None for one value)."""
    if not values:
        return math.nan, None
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def warm_up(data: PreparedData, s: Setting, threads: int) -> None:
    """One short search (it settles after its first step) and one DCN epoch, untimed: the
    first run of a process pays for lazy initialisation, which would count against one side."""
    train = TrainConfig(epochs=1, batch_size=s.batch_size, lr_emb=s.lr, lr_nn=s.lr,
                        device="cpu", progress=False, threads=threads)
    search(data, SupernetConfig(embed_dim=s.embed_dim, num_layers=s.num_layers), train,
           SearchConfig(arch_lr=s.arch_lr, settle_steps=1))
    fit(build_model("dcn", data.num_features, data.num_fields,
                    reference_dcn_config(data.num_fields, s.embed_dim)), data, train)


def one_seed(data: PreparedData, s: Setting, seed: int, window: int, threads: int) -> dict:
    """Both searches, the DCN run and both retrainings of one seed."""
    supernet_cfg = SupernetConfig(embed_dim=s.embed_dim, num_layers=s.num_layers)
    train = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr_emb=s.lr, lr_nn=s.lr,
                        device="cpu", progress=False, threads=threads, seed=seed)
    configs = {"full": SearchConfig(arch_lr=s.arch_lr),
               "settled": SearchConfig(arch_lr=s.arch_lr, settle_steps=window)}
    order = ["full", "settled"] if seed % 2 == 0 else ["settled", "full"]
    results, row = {}, {"seed": seed, "load_before": load()[0]}

    def run_search(kind: str) -> None:
        results[kind] = search(data, supernet_cfg, train, configs[kind])

    run_search(order[0])
    dcn_train = dataclasses.replace(train, patience=s.epochs + 1)  # every epoch runs
    torch.manual_seed(seed)
    dcn = build_model("dcn", data.num_features, data.num_fields,
                      reference_dcn_config(data.num_fields, s.embed_dim))
    started = time.perf_counter()
    fit(dcn, data, dcn_train)
    row["dcn_seconds"] = time.perf_counter() - started
    run_search(order[1])
    full, settled = results["full"], results["settled"]
    row["full_seconds"], row["settled_seconds"] = full.search_seconds, settled.search_seconds
    row["saved_fraction"] = 1 - settled.search_seconds / full.search_seconds
    step = settled.settled.get("one-shot")
    row["settled_step"] = step[0] if step else None
    row["full_steps"] = int(full.history["step"].max())
    row["settled_steps"] = int(settled.history["step"].max())
    row["same_genotype"] = full.genotype == settled.genotype
    aucs = {}
    for kind, result in (("full", full), ("settled", settled)):
        if result.genotype is None:  # collapsed: no genotype to retrain
            aucs[kind] = math.nan
        elif kind == "settled" and row["same_genotype"]:
            aucs[kind] = aucs["full"]  # the same genotype and seed: the same retraining
        else:
            run = retrain(data, result.genotype, train, [seed], selection="hard")
            aucs[kind] = run.results[0].test_auc
    row["auc_full"], row["auc_settled"] = aucs["full"], aucs["settled"]
    row["auc_diff"] = aucs["settled"] - aucs["full"]
    row["load_after"] = load()[0]
    return row


def summarize(name: str, rows: list[dict], window: int, per_epoch: int) -> list[dict]:
    n = len(rows)
    settled = [r for r in rows if r["settled_step"] is not None]
    saved, saved_se = mean_se([r["saved_fraction"] for r in rows])
    diffs = [r["auc_diff"] for r in rows if not math.isnan(r["auc_diff"])]
    diff, diff_se = mean_se(diffs)
    ratio_full = statistics.median(r["full_seconds"] / r["dcn_seconds"] for r in rows)
    ratio_settled = statistics.median(r["settled_seconds"] / r["dcn_seconds"] for r in rows)
    se = f"{diff_se:.4f}" if diff_se is not None else "n/a (one seed)"
    met = None if not diffs else (diff + 2 * (diff_se or 0.0) >= 0)
    window_note = f"window {window} steps ({window / per_epoch:.2f} epoch), {n} seed(s)"
    return [
        record(f"{name}.search_seconds_full", statistics.median(r["full_seconds"] for r in rows),
               "s", note=f"median over {n} seed(s); the paper's search (no window)"),
        record(f"{name}.search_seconds_settled",
               statistics.median(r["settled_seconds"] for r in rows), "s",
               note=f"median; {window_note}"),
        record(f"{name}.settle_saved_fraction", saved, "fraction",
               note=f"mean of 1 - settled/full per seed, SE "
                    f"{saved_se:.3f}" if saved_se is not None else "one seed"),
        record(f"{name}.settle_saved_steps_fraction",
               mean_se([1 - r["settled_steps"] / r["full_steps"] for r in rows])[0], "fraction",
               note="1 - settled/full in optimizer steps, mean over seeds: the work saved, "
                    "free of the machine's load"),
        record(f"{name}.settled_seeds", len(settled) / n, "share",
               note=f"{len(settled)} of {n} seeds settled within the budget; {window_note}"),
        record(f"{name}.settle_same_genotype", sum(r["same_genotype"] for r in rows) / n, "share",
               note="seeds whose settled genotype equals the full search's"),
        record(f"{name}.retrained_auc_full", mean_se([r["auc_full"] for r in rows])[0], "AUC",
               note="hard genotype retrained from scratch, test AUC, mean over seeds"),
        record(f"{name}.retrained_auc_settled", mean_se([r["auc_settled"] for r in rows])[0],
               "AUC", note="the same for the settled search's genotype"),
        record(f"{name}.retrained_auc_diff_settled_minus_full", diff, "AUC",
               target="mean + 2 SE >= 0 (no measurable loss)", met=met,
               note=f"paired over {len(diffs)} seed(s), SE {se}"),
        record(f"{name}.search_vs_dcn_run_full", ratio_full, "x DCN run",
               note="search start to genotype / one DCN training run of the same epochs, "
                    "median of per-seed ratios"),
        record(f"{name}.search_vs_dcn_run_settled", ratio_settled, "x DCN run",
               note=f"the same with the settled stop; {window_note}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settle-steps", type=int, help="the window in steps (default: "
                        "--window-epochs of an epoch)")
    parser.add_argument("--window-epochs", type=float, default=0.5,
                        help="the window as a fraction of an epoch's steps (default 0.5)")
    parser.add_argument("--epochs", type=int, help="epoch budget (default 3)")
    parser.add_argument("--layers", type=int, help="layers L of the fusion graph (default 3)")
    parser.add_argument("--teacher-only", action="store_true", help="skip the real Criteo rows")
    parser.add_argument("--datasets", nargs="+", choices=("teacher", "criteo-real"),
                        default=["teacher", "criteo-real"], help="which data (default both)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="one seed, the teacher data only, 1 epoch, L = 1, a window of a "
                        "quarter epoch (under a minute on a quiet machine)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_only = args.seeds[:1], True
        args.epochs, args.layers = args.epochs or 1, args.layers or 1
        args.window_epochs = 0.25
    torch.set_num_threads(args.threads)
    info = machine()
    print(f"{info['cpu']}, {info['usable_cores']} usable cores, torch {info['torch']}, "
          f"{args.threads} thread(s); load average {info['load_average']}")
    records, details = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_settle_") as tmp:
        for s in settings(args):
            out = Path(tmp) / s.name
            prepare(s.raw, out, PrepareConfig(s.dataset))
            data = PreparedData.open(out)
            per_epoch = -(-len(data.arrays("train")[1]) // s.batch_size)
            window = args.settle_steps or max(1, round(args.window_epochs * per_epoch))
            print(f"\n{s.name}: {data.num_features:,} features, {per_epoch} steps an epoch, up "
                  f"to {s.epochs} epoch(s), L={s.num_layers}, batch {s.batch_size}; settle "
                  f"window {window} steps")
            print(f"  {'seed':>4} {'full s':>7} {'settled s':>9} {'saved':>6} {'step':>5} "
                  f"{'DCN s':>6} {'same':>5} {'AUC full':>9} {'AUC settl':>9} {'load':>5}")
            warm_up(data, s, args.threads)
            rows = []
            for seed in args.seeds:
                r = one_seed(data, s, seed, window, args.threads)
                rows.append(r)
                step = "-" if r["settled_step"] is None else str(r["settled_step"])
                print(f"  {seed:>4} {r['full_seconds']:>7.1f} {r['settled_seconds']:>9.1f} "
                      f"{r['saved_fraction']:>6.0%} {step:>5} {r['dcn_seconds']:>6.1f} "
                      f"{'yes' if r['same_genotype'] else 'no':>5} {r['auc_full']:>9.4f} "
                      f"{r['auc_settled']:>9.4f} {r['load_after']:>5.1f}", flush=True)
                details[s.name] = {"setting": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in dataclasses.asdict(s).items()},
                                   "window": window, "steps_per_epoch": per_epoch,
                                   "seeds": rows}
                if args.json:  # after every seed: an interrupted run keeps what it measured
                    write_report(args.json, "settle",
                                 records + summarize(s.name, rows, window, per_epoch),
                                 details=details, complete=False)
            records += summarize(s.name, rows, window, per_epoch)
    print()
    for r in records:
        flag = "" if r["met"] is None else ("  MET" if r["met"] else "  NOT MET")
        print(f"{r['metric']:<52} {r['value']:>9.4f} {r['unit']:<10}{flag}  {r['note']}")
    print(f"\nload average after: {load()}")
    if args.json:
        write_report(args.json, "settle", records, details=details, complete=True)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
