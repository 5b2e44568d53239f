"""Is the teacher's planted fusion found? Search the teacher data and compare with chance.

What it measures
----------------
The embedded teacher file (``data_samples/teacher_kdd12.tsv.gz``, 20,000 rows) has labels drawn
from a stated genotype (``optfusion_lab.models.teacher.TEACHER_GENOTYPE``: 8 edges). For every
seed, this script runs the one-shot search (the ``tiny`` search preset's sizes unless changed:
D = 4, batch 256, up to 3 epochs, patience 1, lr 3e-3, arch_lr 0.1, alpha_init 0.5) and scores
the found genotype against the teacher (edge agreement, precision, recall over *live* edges;
operation agreement over nodes live in both) and against chance
(``optfusion_lab.models.teacher.chance_distribution``): for the edge metrics ``--chance`` random
genotypes with as many active edges as the found one; for the operations, the found edges with
a uniformly random operation per node (the same live nodes, so the same nodes are compared).
Per metric: the found value, chance's mean and 95th percentile, the share of chance draws it
beats; then the same for the *mean over the seeds* against chance's distribution of that mean
(``mean_against_chance``), and the operations a constant "every node ADD" guess would score on
the same nodes (the teacher's live nodes are half ADD), and how often the search picked the
teacher's operation at C1 and D2, the only two compared nodes whose operation the loss can tell
apart (``tests/test_identifiability.py``).

``--gate-sparsity`` turns on our optional price on active edges (not the paper's);
``--sparsity-warmup N`` (no price in a phase's first N steps) and ``--sparsity-kind l2`` (price
``X * alpha`` instead of ``X``) are variants of it measured here only, not library options;
``--teacher-rows`` / ``--teacher-scale`` search a freshly generated teacher file instead of the
embedded one (same teacher model and seed; more rows, or a larger logit spread, i.e. a cleaner
label signal), cached under ``benchmarks/_data/``.

Records (``--json``): per metric the mean over the seeds, ``met`` when it beats chance's 95th
percentile of that mean; the C1/D2 hits against a 1/4 binomial's 95th percentile; collapses.

How to run
----------
::

    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 1 2
    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 1 2 --gate-sparsity 0.0005
    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 1 2 --teacher-rows 60000
    .venv/bin/python benchmarks/teacher_recovery.py --quick --json out.json

One search takes 10 to 60 seconds on one CPU core (more on a busy machine); ``--quick`` is one
seed and 200 chance draws.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_support import environment, load

from optfusion_lab import fusion_search
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.synthetic import write
from optfusion_lab.data.teacher import TEACHER_SAMPLE
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.io import write_json
from optfusion_lab.models.supernet import SupernetConfig
from optfusion_lab.models.teacher import (
    TEACHER_GENOTYPE,
    TEACHER_SCALE,
    TEACHER_SIGNALS,
    generate_teacher,
    mean_against_chance,
    one_operation_agreement,
    per_field_auc,
    score_against_chance,
    teacher_split_auc,
)
from optfusion_lab.names import BETA_INITS
from optfusion_lab.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / "_data"
METRICS = ("edge_agreement", "edge_precision", "edge_recall", "edge_recall_renamed",
           "operation_agreement")
# The teacher's nodes whose operation the loss can tell apart (tests/test_identifiability.py):
# D1 has one input (ADD = PROD there, CONCAT a linear map its block absorbs) and OUT's output
# layer is linear (CONCAT can compute ADD), so only these carry evidence.
IDENTIFIABLE = ("C1", "D2")


def teacher_data(rows: int | None, scale: float, signal: str = "full") -> PreparedData:
    """The embedded teacher sample (``rows`` None, the default scale and signal) or a generated
    one, prepared once and cached."""
    name, sample_rows, seed = TEACHER_SAMPLE
    if rows is None and scale == TEACHER_SCALE and signal == "full":
        raw, out = REPO / "data_samples" / name, CACHE / "teacher_prepared"
    else:
        rows = sample_rows if rows is None else rows
        tag = f"teacher_{rows}rows_scale{scale:g}" + ("" if signal == "full" else f"_{signal}")
        raw, out = CACHE / f"{tag}.tsv", CACHE / f"{tag}_prepared"
        if not raw.is_file():
            write(generate_teacher(rows, seed, scale, signal), raw)
    if not (out / "meta.json").is_file():
        prepare(raw, out, PrepareConfig("kdd12"))
    return PreparedData.open(out)


def reference_aucs(data: PreparedData, rows: int | None, scale: float, signal: str) -> dict:
    """Valid AUC of the teacher itself (the ceiling) and of a per-field logistic regression
    (what a student that learns no interaction reaches)."""
    _, sample_rows, seed = TEACHER_SAMPLE
    rows = sample_rows if rows is None else rows
    return {"teacher": round(teacher_split_auc(data.meta, data.arrays("valid"), rows, seed,
                                               "valid", scale, signal), 4),
            "per_field": round(per_field_auc(data, "valid"), 4)}


def operations_table(genotype) -> dict[str, str]:
    """Found/teacher operation of every node live in both (the nodes operation agreement uses)."""
    truth = TEACHER_GENOTYPE
    both = (set(genotype.live_blocks()) & set(truth.live_blocks()) - {"C0"}) | {"OUT"}
    return {n: f"{genotype.choice(n).operation}/{truth.choice(n).operation}"
            for n in genotype.graph.fusion_nodes if n in both}


def sparsity_variant(warmup: int, kind: str):
    """Install a variant of the gate-sparsity price in the search (this script only; measured,
    not offered by the library): no price for the first ``warmup`` steps of a phase (the weights
    learn first), and ``kind`` "l2" prices an active edge ``X * alpha`` (a pull towards 0 that an
    edge with real loss gradient resists) instead of the library's flat ``X``."""
    if warmup == 0 and kind == "l1":
        return

    @contextlib.contextmanager
    def hook(net, strength):
        alpha = getattr(net, "alpha", None)
        if strength == 0 or alpha is None:
            yield
            return
        steps = [0]

        def price(grad):
            steps[0] += 1
            if steps[0] <= warmup:
                return grad
            size = alpha.detach() if kind == "l2" else 1.0
            return grad + strength * size * (alpha.detach() > 0)

        handle = alpha.register_hook(price)
        try:
            yield
        finally:
            handle.remove()

    fusion_search.gate_sparsity_hook = hook


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--embed-dim", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--arch-lr", type=float, default=0.1)
    p.add_argument("--alpha-init", type=float, default=0.5)
    p.add_argument("--beta-init", choices=BETA_INITS, default="xavier")
    p.add_argument("--embed-init-std", type=float, default=0.01)
    p.add_argument("--gate-sparsity", type=float, default=0.0)
    p.add_argument("--sparsity-warmup", type=int, default=0,
                   help="steps of each search phase before the gate-sparsity price starts")
    p.add_argument("--sparsity-kind", choices=("l1", "l2"), default="l1",
                   help="l1: X per active edge (the library's); l2: X * alpha per active edge")
    p.add_argument("--teacher-rows", type=int, help="generate a teacher file of this many rows")
    p.add_argument("--teacher-scale", type=float, default=TEACHER_SCALE,
                   help=f"spread of the teacher's standardised logit (default {TEACHER_SCALE})")
    p.add_argument("--teacher-signal", choices=TEACHER_SIGNALS, default="full",
                   help="interactions: the teacher's output less its best per-field fit")
    p.add_argument("--chance", type=int, default=1000, help="chance draws per search")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one seed, 200 chance draws")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.chance = args.seeds[:1], min(args.chance, 200)
    torch.set_num_threads(args.threads)
    sparsity_variant(args.sparsity_warmup, args.sparsity_kind)
    data = teacher_data(args.teacher_rows, args.teacher_scale, args.teacher_signal)
    references = reference_aucs(data, args.teacher_rows, args.teacher_scale, args.teacher_signal)
    print(f"valid AUC of the teacher {references['teacher']}, of a per-field logistic "
          f"regression {references['per_field']}")
    print(f"load average before: {load()}")
    rows, found = [], []
    for seed in args.seeds:
        started = time.perf_counter()
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_emb=args.lr,
                            lr_nn=args.lr, patience=args.patience, device="cpu",
                            progress=False, threads=args.threads, seed=seed)
        supernet = SupernetConfig(embed_dim=args.embed_dim, alpha_init=args.alpha_init,
                                  beta_init=args.beta_init,
                                  embed_init_std=args.embed_init_std)
        result = search(data, supernet, train,
                        SearchConfig(arch_lr=args.arch_lr, history_every=50,
                                     gate_sparsity=args.gate_sparsity))
        row = {"seed": seed, "best_epoch": result.fit.best_epoch,
               "valid_auc": round(result.fit.best_valid_auc, 4),
               "seconds": round(time.perf_counter() - started, 1)}
        if result.genotype is None:
            row["collapse"] = result.collapse
        else:
            genotype = result.genotype
            found.append(genotype)
            row["active_edges"] = len(genotype.edges)
            row["live_edges"] = len(genotype.live_edges())
            row["edges"] = [f"{src}->{dst}" for src, dst in genotype.edges]
            row["operations"] = operations_table(genotype)
            row["constant_add_operations"] = round(one_operation_agreement(genotype), 4)
            row["score"] = score_against_chance(genotype, count=args.chance, seed=seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"load average after: {load()}")
    collapsed = len(rows) - len(found)
    summary = mean_against_chance(found, count=args.chance) if found else {}
    if found:
        print(f"mean over {len(found)} seeds ({collapsed} collapsed):")
        for metric, s in summary.items():
            print(f"  {metric:20s} {s['found']:.3f}  chance mean {s['chance_mean']:.3f}  "
                  f"p95 {s['chance_p95']:.3f}  beats {s['beats']:.1%}")
    picks = [r["operations"][n].split("/") for r in rows if "operations" in r
             for n in IDENTIFIABLE if n in r["operations"]]
    hits = sum(a == b for a, b in picks)
    draws = np.random.default_rng(0).random((args.chance, len(picks))) < 0.25
    identifiable_p95 = float(np.percentile(draws.sum(axis=1), 95)) if picks else 0.0
    print(f"identifiable nodes {'/'.join(IDENTIFIABLE)}: the teacher's operation in {hits} of "
          f"{len(picks)} (chance 1/4 each: p95 {identifiable_p95:g})")
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "quick")}
        records = [
            {"metric": f"{metric}_mean", "value": summary[metric]["found"], "unit": "share",
             "target": f"> chance p95 of the mean ({summary[metric]['chance_p95']})",
             "met": summary[metric]["found"] > summary[metric]["chance_p95"],
             "note": f"mean over seeds {[g for g in args.seeds]} ({collapsed} collapsed); chance "
                     f"mean {summary[metric]['chance_mean']}, beats {summary[metric]['beats']}"}
            for metric in METRICS if found
        ]
        records.append({"metric": "identifiable_operations_found", "value": hits,
                        "unit": "nodes", "target": f"> chance p95 ({identifiable_p95:g})",
                        "met": hits > identifiable_p95,
                        "note": f"of {len(picks)} (nodes {', '.join(IDENTIFIABLE)} live in both, "
                                "over the seeds); chance picks the teacher's with p = 1/4"})
        records.append({"metric": "collapsed_searches", "value": collapsed, "unit": "searches",
                        "target": "0", "met": collapsed == 0, "note": f"of {len(rows)}"})
        write_json(args.json, {"benchmark": "teacher_recovery",
                               "machine": environment("torch", load=load()),
                               "records": records, "settings": settings, "mean": summary,
                               "reference_valid_auc": references,
                               "runs": rows})


if __name__ == "__main__":
    main()
