"""Paired comparison of every baseline with a plain PyTorch model on the real Criteo and Avazu rows.

What it does
------------
1. Prepares ``$OPTFUSION_REAL_SAMPLES/criteo/kaggle2014criteo_train.tiny.csv`` (1,999 rows) and
   ``$OPTFUSION_REAL_SAMPLES/avazu/kaggleavazu_tr.rx.csv`` (2,994 rows) with the project's
   ``prepare`` (threshold 2, seed 42: an 8:1:1 split) into a temporary directory, deleted at the
   end. The variable must be set (see the samples' SOURCES.md); the rows are never copied into
   the repository.
2. For every seed and every baseline it trains, with the same seed (hence the same initial
   weights and the same batch order):

   - ``plain``: the plain PyTorch version of the model from ``lean_dcn.py`` and its plain loop,
     with no L2 at all (every baseline has one; IPNN, xDeepFM and EDCN are given the library
     model's initial weights through a mapping of state_dict keys). EDCN is also paired with
     the plain DCN of the same seed (the ``vs plain dcn`` row): EDCN is a DCN with shared
     towers, so that row says what the sharing does;
   - ``reference`` (for ``--reference-models``, by default dnn, deepfm and dcn): the library
     model trained by ``optfusion_lab.train`` with the L2 of the dataset's reference preset
     (``optfusion_lab.presets``) on both Adam groups (coupled, as the reference does);
   - ``no-emb-l2``: the same with the embedding tables' L2 switched off
     (``--embedding-l2 off`` of ``optfusion-lab train``); the network keeps the preset's L2;
   - ``no-l2`` (only on request, ``--variants no-l2``): no L2 at all, the plain model's exact
     settings; a model with a plain version then gives the plain run's test AUC to the last bit;
   - ``preset`` (only on request): the preset's own learning rate *and* L2 for the model (the
     other variants use lr 1e-3 for every model).

   Settings shared by all: embedding dim 16, MLP 400-400-400, 3 cross layers (EDCN layers),
   CIN (F, F, F), lr 1e-3 on both groups, batch 256, up to ``--epochs`` (10) epochs with early
   stopping on valid AUC, patience ``--patience`` (2), the best epoch restored, CPU.
   Before training, a check: for every model, the library model of seed 0 and the plain model
   holding its weights give the same predictions (allclose) on the first 256 training rows, in
   evaluation and in training mode; the script stops if not.
3. Prints, per dataset, model and variant, the mean over seeds of the paired difference of test
   AUC (library minus plain) with its standard error ``sd(diff) / sqrt(n)``, and says whether it
   lies within two standard errors of zero. The runs go model by model (all seeds of one
   model, then the next; xDeepFM, slow on a CPU, last), so a partial run has whole rows. Every
   run is appended to ``--log`` (JSON lines) as it finishes; a rerun with the same log skips the
   runs it already holds, and ``--summarize LOG`` prints the table of a finished or partial log.

How to run
----------
::

    export OPTFUSION_REAL_SAMPLES=/path/to/real_samples
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_real.py --seeds 10 --log paired.jsonl
    .venv/bin/python benchmarks/compare_real.py --summarize paired.jsonl --json paired.json

``--json PATH`` writes every paired row as a record (``met``: the mean lies within two standard
errors of zero); ``--quick`` is a smoke run (2 seeds, Criteo, dcn and edcn, 3 epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_support import environment
from lean_dcn import (
    LeanConfig,
    build_plain,
    library_config,
    load_split,
    plain_from_library,
    train_lean,
)

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.prepare import PrepareConfig, prepare
from optfusion_lab.io import write_json
from optfusion_lab.models import MODELS, ModelConfig, build_model
from optfusion_lab.presets import PRESETS
from optfusion_lab.train import TrainConfig, run_seeds

RAW_FILES = {
    "criteo": Path("criteo") / "kaggle2014criteo_train.tiny.csv",
    "avazu": Path("avazu") / "kaggleavazu_tr.rx.csv",
}
EMBED_DIM = 16
MLP_DIMS = (400, 400, 400)
CROSS_LAYERS = 3
LR = 1e-3
BATCH_SIZE = 256
# the order of the runs: the plain-paired models first, xDeepFM (slow on a CPU) last
MODEL_ORDER = ("dcn", "dnn", "deepfm", "edcn", "dcnv2-parallel", "dcnv2-stacked", "ipnn",
               "xdeepfm")
VARIANTS = ("reference", "no-emb-l2", "no-l2", "preset")  # the default runs the first two


# extra pairings beside every model's own plain version: EDCN against the plain DCN
EXTRA_PARTNERS = {"edcn": ("dcn",)}


def partners(model: str) -> tuple[str, ...]:
    """The plain models a baseline is paired with: its own plain version first."""
    return (model, *EXTRA_PARTNERS.get(model, ()))


def lean_config(seed: int, epochs: int, patience: int, batch_size: int) -> LeanConfig:
    return LeanConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS,
                      batch_size=batch_size, epochs=epochs, patience=patience, lr_emb=LR,
                      l2_emb=0.0, lr_nn=LR, l2_nn=0.0, seed=seed)


def check_identical_weights(models: list[str], data: PreparedData, rows: int = 256) -> None:
    """Library model (seed 0) and the plain model holding its weights: same predictions on the
    first ``rows`` training rows, in eval and in train mode; SystemExit if not."""
    ids = load_split(data, "train")[0][:rows]
    cfg = lean_config(0, 1, 1, BATCH_SIZE)
    for model in models:
        torch.manual_seed(0)
        library = build_model(model, data.num_features, data.num_fields, library_config(cfg))
        plain = plain_from_library(model, library, data.num_features, data.num_fields, cfg)
        gaps = []
        with torch.no_grad():
            for train in (False, True):
                library.train(train), plain.train(train)
                a, b = library(ids), plain(ids)
                if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                    raise SystemExit(f"{model}: plain and library predictions differ at identical "
                                     f"weights (max |diff| {float((a - b).abs().max()):.2e})")
                gaps.append(float((a - b).abs().max()))
        print(f"  {model}: plain = library at identical weights (max |logit diff| eval "
              f"{gaps[0]:.1e}, train {gaps[1]:.1e})", flush=True)


def library_auc(model: str, data: PreparedData, variant: str, dataset: str, seed: int,
                epochs: int, patience: int, batch_size: int) -> dict:
    """Test AUC of one library run; ``variant`` picks the L2 (see the module docstring)."""
    preset_lr, l2 = PRESETS[dataset].learning_rates[model]
    lr = preset_lr if variant == "preset" else LR
    model_cfg = ModelConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS)
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr_emb=lr, lr_nn=lr,
                            l2_emb=l2 if variant in ("reference", "preset") else 0.0,
                            l2_nn=0.0 if variant == "no-l2" else l2,
                            patience=patience, device="cpu", progress=False)
    frame, _ = run_seeds(model, model_cfg, data, train_cfg, [seed])
    row = frame.iloc[0]
    return {"test_auc": float(row["test_auc"]), "best_epoch": int(row["best_epoch"]),
            "lr": lr, "l2_emb": train_cfg.l2_emb, "l2_nn": train_cfg.l2_nn}


def plain_auc(model: str, data: PreparedData, seed: int, epochs: int, patience: int,
              batch_size: int) -> dict:
    cfg = lean_config(seed, epochs, patience, batch_size)
    result = train_lean(build_plain(model, data.num_features, data.num_fields, cfg), data, cfg)
    return {"test_auc": result["test_auc"], "best_epoch": result["best_epoch"]}


def unique(records: list[dict]) -> list[dict]:
    """One record per run, the first (two processes may share a log)."""
    first: dict[tuple, dict] = {}
    for r in records:
        first.setdefault((r["dataset"], r["kind"], r["model"], r.get("variant"), r["seed"]), r)
    return list(first.values())


def summarize(records: list[dict]) -> list[dict]:
    """Paired differences (library - plain) of test AUC per dataset, model and variant."""
    records = unique(records)
    plain = {(r["dataset"], r["model"], r["seed"]): r["test_auc"] for r in records
             if r["kind"] == "plain"}
    groups: dict[tuple, list[tuple[float, int]]] = {}
    for r in records:
        if r["kind"] != "library":
            continue
        for name in partners(r["model"]):
            key = (r["dataset"], r["model"], r["variant"], name)
            partner = plain.get((r["dataset"], name, r["seed"]))
            if partner is not None:
                groups.setdefault(key, []).append((r["test_auc"] - partner, r["best_epoch"],
                                                   partner))
    rows = []
    for (dataset, model, variant, partner), pairs in groups.items():
        diffs = np.array([p[0] for p in pairs])
        n = len(diffs)
        se = float(diffs.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        mean = float(diffs.mean())
        lib = [r["test_auc"] for r in records if r["kind"] == "library" and r["dataset"] == dataset
               and r["model"] == model and r["variant"] == variant]
        rows.append({"dataset": dataset, "model": model, "variant": variant,
                     "partner": partner, "paired_with": f"plain {partner}", "n": n,
                     "library_auc": float(np.mean(lib)),
                     "plain_auc": float(np.mean([p[2] for p in pairs])),
                     "mean_difference": mean, "se": se,
                     "within_2se": bool(abs(mean) <= 2 * se) if n > 1 else None,
                     "mean_best_epoch": float(np.mean([p[1] for p in pairs]))})
    order = {name: i for i, name in enumerate(MODELS)}
    rows.sort(key=lambda r: (r["dataset"], order[r["model"]], r["partner"] != r["model"],
                             VARIANTS.index(r["variant"])))
    return rows


def print_table(records: list[dict]) -> None:
    print("\n| dataset | model | variant | paired with (its AUC, same seeds) | n | library AUC | "
          "mean diff | SE | within 2 SE | best epoch |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for row in summarize(records):
        within = "-" if row["within_2se"] is None else "yes" if row["within_2se"] else "NO"
        print(f"| {row['dataset']} | {row['model']} | {row['variant']} | {row['paired_with']} "
              f"({row['plain_auc']:.4f}) | {row['n']} | {row['library_auc']:.4f} | "
              f"{row['mean_difference']:+.4f} | {row['se']:.4f} | "
              f"{within} | {row['mean_best_epoch']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed: seeds K..K+N-1 (to split a run over processes)")
    parser.add_argument("--datasets", nargs="+", default=list(RAW_FILES), choices=list(RAW_FILES))
    parser.add_argument("--models", nargs="+", default=list(MODEL_ORDER), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[:2]), choices=VARIANTS,
                        help="library runs: reference, no-emb-l2 (default both); no-l2 trains "
                             "with the plain model's settings exactly; preset uses the preset's "
                             "own learning rate too")
    parser.add_argument("--reference-models", nargs="+", default=["dnn", "deepfm", "dcn"],
                        choices=list(MODELS), metavar="MODEL",
                        help="models that also run the reference variant (default: dnn deepfm "
                             "dcn, the three of the Avazu question)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"training batch size (default {BATCH_SIZE})")
    parser.add_argument("--epochs", type=int, default=10, help="upper bound on epochs (10)")
    parser.add_argument("--patience", type=int, default=2, help="early-stopping patience (2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--log", type=Path, help="append every run here (JSON lines)")
    parser.add_argument("--summarize", type=Path, metavar="LOG",
                        help="only print the table of an existing log")
    parser.add_argument("--json", type=Path, help="write the paired rows as records here")
    parser.add_argument("--quick", action="store_true",
                        help="2 seeds, Criteo, dcn and edcn, 3 epochs (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.datasets, args.models, args.epochs = 2, ["criteo"], ["dcn", "edcn"], 3
    if args.summarize is not None:
        records = [json.loads(line) for line in args.summarize.read_text().splitlines() if line]
        print_table(records)
        write_records(args.json, records, args)
        return 0

    root = os.environ.get("OPTFUSION_REAL_SAMPLES")
    if not root:
        raise SystemExit("set OPTFUSION_REAL_SAMPLES to the real_samples folder (see SOURCES.md)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); D={EMBED_DIM}, MLP "
          f"{'-'.join(map(str, MLP_DIMS))}, {CROSS_LAYERS} cross layers, lr {LR:g}, batch "
          f"{args.batch_size}, up to {args.epochs} epochs, patience {args.patience}", flush=True)
    previous = []
    if args.log is not None and args.log.is_file():  # continue a log: skip the runs it holds
        previous = [json.loads(line) for line in args.log.read_text().splitlines() if line]
    records: list[dict] = list(previous)

    def record(entry: dict) -> None:
        records.append(entry)
        print(json.dumps(entry), flush=True)
        if args.log is not None:
            with args.log.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    with tempfile.TemporaryDirectory(prefix="optfusion_paired_") as tmp:
        for dataset in args.datasets:
            raw = Path(root) / RAW_FILES[dataset]
            if not raw.is_file():
                raise SystemExit(f"{raw} not found; is OPTFUSION_REAL_SAMPLES right?")
            meta = prepare(raw, Path(tmp) / dataset, PrepareConfig(dataset, threshold=2, seed=42))
            data = PreparedData.open(Path(tmp) / dataset)
            print(f"{dataset}: {meta['num_rows']} rows, {meta['num_features']:,} features",
                  flush=True)
            check_identical_weights(args.models, data)
            done = {(r["kind"], r["model"], r.get("variant"), r["seed"]) for r in previous
                    if r["dataset"] == dataset}
            for model in args.models:  # model by model, so that a partial run has whole rows
                variants = [v for v in args.variants
                            if v != "reference" or model in args.reference_models]
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    for partner in partners(model):
                        if ("plain", partner, None, seed) in done:
                            continue
                        started = time.perf_counter()
                        result = plain_auc(partner, data, seed, args.epochs, args.patience,
                                           args.batch_size)
                        record({"dataset": dataset, "kind": "plain", "model": partner,
                                "seed": seed, **result,
                                "seconds": round(time.perf_counter() - started, 1)})
                        done.add(("plain", partner, None, seed))
                    for variant in variants:
                        if ("library", model, variant, seed) in done:
                            continue
                        started = time.perf_counter()
                        result = library_auc(model, data, variant, dataset, seed, args.epochs,
                                             args.patience, args.batch_size)
                        record({"dataset": dataset, "kind": "library", "model": model,
                                "variant": variant, "seed": seed, **result,
                                "seconds": round(time.perf_counter() - started, 1)})
    print_table(records)
    write_records(args.json, records, args)
    return 0


def write_records(path: Path | None, records: list[dict], args: argparse.Namespace) -> None:
    """The paired rows as benchmark records: met = the mean lies within 2 SE of zero."""
    if path is None:
        return
    rows = [{"metric": f"{r['dataset']} {r['model']} ({r['variant']}) minus {r['paired_with']}, "
                       "paired test AUC",
             "value": r["mean_difference"], "unit": "AUC", "target": "|mean| <= 2 SE",
             "met": r["within_2se"],
             "note": f"SE {r['se']:.4f}, n {r['n']}, library AUC {r['library_auc']:.4f}, "
                     f"best epoch {r['mean_best_epoch']:.1f}"} for r in summarize(records)]
    write_json(path, {"benchmark": "compare_real", "machine": environment("torch"),
                      "arguments": {k: str(v) for k, v in vars(args).items()}, "records": rows})


if __name__ == "__main__":
    sys.exit(main())
