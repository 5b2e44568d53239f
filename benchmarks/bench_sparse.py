"""Sparse vs dense embedding updates: step time against the vocabulary, and test AUC.

What it measures
----------------
1. Step time (default mode). A DCN of the reference shape (3 CrossNet-v1 layers beside an MLP of
   three layers of width d = F*D; D = 16, F = 39, d = 624) takes training steps (forward, BCE,
   backward, optimizer step) at batch 4096 on in-memory batches of random ids, for four
   models in one process: a table of ``--large`` (10M) and of ``--small`` (100k) features,
   each with ``embedding_update="dense"`` (Adam over the whole table, the reference) and
   ``"sparse"`` (sparse gradients, ``LazyAdam`` on the touched rows; see
   ``optfusion_lab.train.optim``). The small table's batches have ids uniform within each
   field's share of the table (about 80k distinct rows per batch). The large table's batches
   touch the same number of distinct rows, spread over the whole table (local id i of a field
   becomes row i * 100 of its share), so that the ratio shows what the vocabulary itself costs;
   the sparse large table also runs batches with ids uniform over it (about 158k distinct
   rows, twice the work of the touched rows), reported beside. After ``--warmup`` unmeasured
   steps per configuration, ``--rounds`` rounds each take ``--steps`` timed steps of every
   configuration in turn (interleaved, so a change of the machine's load reaches all), and each
   configuration's figure is its median step. Reported: the step-time ratio large / small table
   for both paths (target: at most 1.5x for the sparse path) and the DCN's sparse / dense
   step-time ratio on the large table (target: below 1, the sparse path faster).
2. Test AUC (``--auc``). On the shared real Criteo and Avazu rows (``$OPTFUSION_REAL_SAMPLES``,
   prepared with threshold 2 and seed 42 into a temporary directory, never copied), a DCN
   (D = 16, MLP 400-400-400, 3 cross layers, lr 1e-3, the dataset preset's DCN L2 on both
   groups, batch 256, up to 10 epochs, patience 2) is trained once per seed with each path,
   the same seed giving the same initial weights and batch order. Reported: the mean over
   seeds of the paired difference of test AUC (sparse minus dense) with its standard error
   ``sd / sqrt(n)``, and whether it is within two standard errors of zero.

Memory: the 10M-feature table is 640 MB; dense Adam adds a 640 MB gradient and 1.3 GB of
moments, the sparse path 1.3 GB of moments: about 5 GB for the four models. Run one at a time.

How to run
----------
::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparse.py --json sparse.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sparse.py --quick      # < 1 minute
    OPTFUSION_REAL_SAMPLES=../shared/real_samples OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_sparse.py --auc --seeds 10 --json sparse_auc.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark_support import busy_cpu_seconds, environment, load, parse_size
from torch import nn

from optfusion_lab.cost import reference_dcn_config
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.prepare import PrepareConfig, prepare
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.presets import PRESETS
from optfusion_lab.train import TrainConfig, fit, make_optimizer

NUM_FIELDS, EMBED_DIM = 39, 16
RAW_FILES = {
    "criteo": Path("criteo") / "kaggle2014criteo_train.tiny.csv",
    "avazu": Path("avazu") / "kaggleavazu_tr.rx.csv",
}
STEP_TARGET = 1.5  # sparse path: step time of the large table / the small table, at most


def record(metric: str, value: float, unit: str, target: str | None = None,
           met: bool | None = None, note: str = "") -> dict:  # fmt: skip
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


# --- 1. step time -------------------------------------------------------------------------


def random_batch(num_features: int, batch_size: int, g: torch.Generator,
                 rows_of: int | None = None):  # fmt: skip
    """Random ids and labels. Ids are uniform within each field's equal share of the table; with
    ``rows_of``, they are the ids of a ``rows_of``-feature table spread over this one (local id
    i of a field becomes row i * stride of its share): the batch then touches as many distinct
    rows as it would in the smaller table, scattered over the whole larger one."""
    per_field = num_features // NUM_FIELDS
    offsets = torch.arange(NUM_FIELDS) * per_field  # (F,)
    drawn = per_field if rows_of is None else rows_of // NUM_FIELDS
    local = torch.randint(0, drawn, (batch_size, NUM_FIELDS), generator=g)  # (B, F)
    ids = local * (per_field // drawn) + offsets
    return ids, torch.randint(0, 2, (batch_size,), generator=g).float()  # (B, F), (B,)


class Model:
    """One DCN and its optimizer for one (table size, update path)."""

    def __init__(self, num_features: int, update: str, seed: int = 0):
        torch.manual_seed(seed)
        self.model = build_model("dcn", num_features, NUM_FIELDS,
                                 reference_dcn_config(NUM_FIELDS, EMBED_DIM)).train()
        cfg = TrainConfig(embedding_update=update, l2_emb=3e-6, l2_nn=3e-6)
        self.optimizer = make_optimizer(self.model, cfg)
        self.num_features = num_features


class Stepper:
    """Training steps of one model on one kind of batch, and their times."""

    def __init__(self, model: Model, batch_size: int, rows_of: int | None, seed: int = 0):
        self.m, self.batch_size, self.rows_of = model, batch_size, rows_of
        self.g = torch.Generator().manual_seed(seed)
        self.times: list[float] = []
        self.distinct_rows: list[int] = []

    def step(self, timed: bool) -> None:
        ids, y = random_batch(self.m.num_features, self.batch_size, self.g, self.rows_of)
        started = time.perf_counter()
        loss = nn.functional.binary_cross_entropy_with_logits(self.m.model(ids), y)
        self.m.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.m.optimizer.step()
        if timed:
            self.times.append(time.perf_counter() - started)
            self.distinct_rows.append(int(ids.unique().numel()))


def step_times(args) -> list[dict]:
    models = {(size, update): Model(features, update)
              for size, features in (("large", args.large), ("small", args.small))
              for update in ("sparse", "dense")}
    # (table, update, batches): "equal" touches the small table's number of distinct rows,
    # "uniform" ids uniform over the table (more distinct rows in the larger table)
    steppers = {
        ("large", "sparse", "equal"): Stepper(models["large", "sparse"], args.batch_size,
                                              args.small),
        ("large", "dense", "equal"): Stepper(models["large", "dense"], args.batch_size,
                                             args.small),
        ("large", "sparse", "uniform"): Stepper(models["large", "sparse"], args.batch_size,
                                                None, seed=1),
        ("small", "sparse", "uniform"): Stepper(models["small", "sparse"], args.batch_size, None),
        ("small", "dense", "uniform"): Stepper(models["small", "dense"], args.batch_size, None),
    }
    for key, s in steppers.items():
        started = time.perf_counter()
        for _ in range(args.warmup):
            s.step(timed=False)
        print(f"  warm-up {' '.join(key):<22} {time.perf_counter() - started:6.1f} s",
              flush=True)
    for r in range(args.rounds):
        for s in steppers.values():
            for _ in range(args.steps):
                s.step(timed=True)
        print(f"  round {r + 1}/{args.rounds} done, load {load()}", flush=True)
    median = {key: statistics.median(s.times) for key, s in steppers.items()}
    records = []
    for (size, update, batches), seconds in median.items():
        s = steppers[size, update, batches]
        records.append(record(
            f"dcn_step_seconds_{update}_{size}_{batches}", seconds, "s",
            note=f"{s.m.num_features:,} features, {batches} batches, median of {len(s.times)} "
                 f"steps, {statistics.mean(s.distinct_rows):,.0f} distinct rows per batch"))
    label = f"{parse_label(args.large)} vs {parse_label(args.small)} features"
    for update in ("sparse", "dense"):
        ratio = median["large", update, "equal"] / median["small", update, "uniform"]
        target, met = (f"<= {STEP_TARGET}", ratio <= STEP_TARGET) if update == "sparse" else (
            None, None)
        records.append(record(f"{update}_step_ratio_large_vs_small", ratio, "x", target, met,
                              f"DCN step time, {label}, {update} embedding update, the same "
                              "number of distinct rows per batch"))
    uniform = median["large", "sparse", "uniform"] / median["small", "sparse", "uniform"]
    records.append(record("sparse_step_ratio_large_vs_small_uniform_ids", uniform, "x",
                          note="as above, ids uniform over each table: the larger table's "
                               "batches touch more distinct rows"))
    faster = median["large", "sparse", "equal"] / median["large", "dense", "equal"]
    records.append(record("dcn_sparse_vs_dense_step_ratio_large", faster, "x", "< 1",
                          faster < 1, f"sparse / dense step time at {args.large:,} features "
                                      "(below 1: the sparse path is faster)"))
    return records


def parse_label(features: int) -> str:
    if features % 1_000_000 == 0:
        return f"{features // 1_000_000}M"
    return f"{features // 1_000}k" if features % 1_000 == 0 else f"{features:,}"


# --- 2. test AUC --------------------------------------------------------------------------


def paired_auc(args) -> list[dict]:
    root = os.environ.get("OPTFUSION_REAL_SAMPLES")
    if not root or not Path(root).is_dir():
        sys.exit("--auc needs OPTFUSION_REAL_SAMPLES (the folder of the shared real rows)")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            out = Path(tmp) / dataset
            prepare(Path(root) / RAW_FILES[dataset], out, PrepareConfig(dataset, threshold=2,
                                                                        seed=42))
            data = PreparedData.open(out)
            l2 = PRESETS[dataset].learning_rates["dcn"][1]
            diffs, aucs = [], {"dense": [], "sparse": []}
            for seed in range(args.seeds):
                for update in ("dense", "sparse"):
                    aucs[update].append(train_auc(data, update, l2, seed, args))
                diffs.append(aucs["sparse"][-1] - aucs["dense"][-1])
                print(f"  {dataset} seed {seed}: dense {aucs['dense'][-1]:.4f} sparse "
                      f"{aucs['sparse'][-1]:.4f} diff {diffs[-1]:+.4f}", flush=True)
            mean = statistics.mean(diffs)
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
            records.append(record(
                f"test_auc_sparse_minus_dense_{dataset}", mean, "AUC",
                "|mean| <= 2 SE (no measurable difference)", abs(mean) <= 2 * se,
                f"paired over {len(diffs)} seeds, SE {se:.5f}; dense "
                f"{statistics.mean(aucs['dense']):.4f}, sparse "
                f"{statistics.mean(aucs['sparse']):.4f}; DCN D=16 MLP 400x3, lr 1e-3, L2 {l2:g} "
                f"both groups, batch {args.auc_batch_size}, patience 2, {data.num_features:,} "
                "features"))
    return records


def train_auc(data: PreparedData, update: str, l2: float, seed: int, args) -> float:
    torch.manual_seed(seed)
    model = build_model("dcn", data.num_features, data.num_fields,
                        ModelConfig(embed_dim=EMBED_DIM, mlp_dims=(400, 400, 400),
                                    cross_layers=3))
    cfg = TrainConfig(epochs=args.auc_epochs, patience=2, batch_size=args.auc_batch_size,
                      lr_emb=1e-3, lr_nn=1e-3, l2_emb=l2, l2_nn=l2, device="cpu", seed=seed,
                      progress=False, embedding_update=update)
    return fit(model, data, cfg).test_auc


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", type=parse_size, default=10_000_000, help="features (10M)")
    parser.add_argument("--small", type=parse_size, default=100_000, help="features (100k)")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model and round")
    parser.add_argument("--auc", action="store_true", help="the paired test AUC instead")
    parser.add_argument("--seeds", type=int, default=10, help="--auc: seeds 0..N-1")
    parser.add_argument("--datasets", nargs="+", choices=tuple(RAW_FILES),
                        default=list(RAW_FILES))
    parser.add_argument("--auc-epochs", type=int, default=10)
    parser.add_argument("--auc-batch-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true",
                        help="a check in under a minute: 1M vs 100k features, 1 round of 1 step "
                             "(with --auc: 2 seeds, Criteo, 3 epochs)")
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.large, args.warmup, args.rounds, args.steps = 1_000_000, 1, 1, 1
        args.seeds, args.datasets, args.auc_epochs = 2, ["criteo"], 3
    machine = environment("torch", threads=torch.get_num_threads(), load_before=load())
    busy = busy_cpu_seconds()
    started = time.perf_counter()
    print(f"threads {machine['threads']}, load {machine['load_before']}", flush=True)
    records = paired_auc(args) if args.auc else step_times(args)
    wall = time.perf_counter() - started
    machine["load_after"] = load()
    if busy is not None:
        machine["busy_cpu_seconds_all_processes"] = round(busy_cpu_seconds() - busy, 1)
    machine["wall_seconds"] = round(wall, 1)
    print(f"\n{'metric':<44}{'value':>10}  {'target':<12} met  note")
    for r in records:
        print(f"{r['metric']:<44}{r['value']:>10.4f}  {r['target'] or '':<12} "
              f"{'' if r['met'] is None else ('yes' if r['met'] else 'NO'):<4} {r['note']}")
    print(f"machine: {machine}")
    if args.json:
        document = {"benchmark": "sparse_embedding_auc" if args.auc else "sparse_embedding",
                    "machine": machine, "records": records}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
