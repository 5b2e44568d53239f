"""Is the teacher's planted fusion found? Search the teacher data and compare with chance.

What it measures
----------------
The embedded teacher file (``data_samples/teacher_kdd12.tsv.gz``) has labels drawn from a stated
genotype (``optfusion_lab.models.teacher.TEACHER_GENOTYPE``: 8 edges). For every seed, this
script runs the one-shot search (the ``tiny`` search preset's sizes unless changed: D = 4,
batch 256, up to 3 epochs, patience 1, lr 3e-3, arch_lr 0.1, alpha_init 0.5), scores the found
genotype against the teacher (edge agreement, precision, recall over *live* edges; operation
agreement over nodes live in both) and against chance: ``--chance`` random genotypes with as
many active edges as the found one and random operations
(``optfusion_lab.models.teacher.score_against_chance``). Per metric it prints the found value,
chance's mean and 95th percentile, and the share of random genotypes the found one beats.
``--gate-sparsity`` turns on our optional price on active edges (not the paper's).

How to run
----------
::

    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 1 2
    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 --gate-sparsity 0.001
    .venv/bin/python benchmarks/teacher_recovery.py --seeds 0 --arch-lr 0.03 --json out.json

One search takes one to two minutes on one busy CPU core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from benchmark_support import environment, load

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.teacher import TEACHER_SAMPLE
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.io import write_json
from optfusion_lab.models.supernet import SupernetConfig
from optfusion_lab.models.teacher import score_against_chance
from optfusion_lab.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "_data" / "teacher_prepared"


def teacher_data() -> PreparedData:
    if not (DATA / "meta.json").is_file():
        prepare(REPO / "data_samples" / TEACHER_SAMPLE[0], DATA, PrepareConfig("kdd12"))
    return PreparedData.open(DATA)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--embed-dim", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--arch-lr", type=float, default=0.1)
    p.add_argument("--alpha-init", type=float, default=0.5)
    p.add_argument("--gate-sparsity", type=float, default=0.0)
    p.add_argument("--chance", type=int, default=1000, help="random genotypes per search")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = teacher_data()
    print(f"load average before: {load()}")
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_emb=args.lr,
                            lr_nn=args.lr, patience=args.patience, device="cpu",
                            progress=False, threads=args.threads, seed=seed)
        result = search(data, SupernetConfig(embed_dim=args.embed_dim, alpha_init=args.alpha_init),
                        train, SearchConfig(arch_lr=args.arch_lr, history_every=50,
                                            gate_sparsity=args.gate_sparsity))
        row = {"seed": seed, "best_epoch": result.fit.best_epoch,
               "valid_auc": round(result.fit.best_valid_auc, 4),
               "seconds": round(time.perf_counter() - started, 1)}
        if result.genotype is None:
            row["collapse"] = result.collapse
        else:
            genotype = result.genotype
            row["active_edges"] = len(genotype.edges)
            row["live_edges"] = len(genotype.live_edges())
            row["score"] = score_against_chance(genotype, count=args.chance, seed=seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"load average after: {load()}")
    if args.json is not None:
        document = {"arguments": vars(args) | {"json": str(args.json)}, "runs": rows,
                    "environment": environment("torch", "numpy")}
        write_json(args.json, document)


if __name__ == "__main__":
    main()
