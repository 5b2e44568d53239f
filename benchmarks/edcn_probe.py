"""EDCN's regulation batch norm on the small real samples: its statistics against eps, and AUC.

What it measures
----------------
EDCN's regulation module standardises every gated tower input with one scalar batch norm
(``FieldRegulation``, eps ``ModelConfig.regulation_eps``, 1e-5 by default as in the authors'
code). On the shared real samples this script trains, for every seed, with the same seed (same
initial weights and batch order) and the settings of ``compare_real.py`` (D = 16, 3 layers,
lr 1e-3 on both Adam groups, no L2, batch 256, up to 10 epochs, patience 2, the best epoch
restored, CPU, one thread):

- ``default``: EDCN as the library builds it (regulation batch norm, eps 1e-5);
- ``eps-1e-3``: the same with ``regulation_eps=1e-3``;
- ``no-norm``: ``regulation_batch_norm=False`` (no norm; the gates are multiplied by F);
- ``dcn``: the library DCN (D = 16, 3 cross layers, MLP 400-400-400).

It reports:

1. the batch norm's statistics after training (the best epoch's weights), per variant with a
   norm: quantiles over seeds and the 2 * 3 norms of the running variance, of ``var / eps``, and
   of the gain ``1 / sqrt(var + eps)`` the norm applies in evaluation mode; and, from a forward
   pass in training mode over the training split (batches of 256, on a copy of the model), the
   quantiles of the batch variances and of the ratio of the training-mode gain to the
   evaluation-mode gain of the same norm;
2. the test AUC of every variant (mean over seeds) and the paired differences (same seed) of
   each variant against ``default`` and against ``dcn``: mean, standard error
   ``sd / sqrt(n)``, and whether the mean lies within two standard errors of zero.

How to run
----------
::

    export OPTFUSION_REAL_SAMPLES=/path/to/real_samples
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/edcn_probe.py --seeds 10 --json probe.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/edcn_probe.py --quick  # 2 seeds, Criteo, 3 epochs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmark_support import environment, load
from compare_real import BATCH_SIZE, CROSS_LAYERS, EMBED_DIM, LR, MLP_DIMS, RAW_FILES

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.prepare import PrepareConfig, prepare
from optfusion_lab.io import write_json
from optfusion_lab.models import ModelConfig
from optfusion_lab.train import TrainConfig, run_seeds

BASE = ModelConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS)
# name -> (library model, its config); "default" is EDCN as the library builds it
VARIANTS: dict[str, tuple[str, ModelConfig]] = {
    "default": ("edcn", BASE),
    "eps-1e-3": ("edcn", dataclasses.replace(BASE, regulation_eps=1e-3)),
    "no-norm": ("edcn", dataclasses.replace(BASE, regulation_batch_norm=False)),
    "dcn": ("dcn", BASE),
}
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def regulation_norms(model: torch.nn.Module) -> list[torch.nn.BatchNorm1d]:
    """EDCN's regulation batch norms, cross tower then deep tower, layer by layer."""
    regs = [*model.cross_regulation, *model.deep_regulation]
    return [reg.norm for reg in regs if reg.norm is not None]


@torch.no_grad()
def norm_statistics(model: torch.nn.Module, data: PreparedData, batch_size: int) -> dict:
    """Running variances and gains of the regulation norms (eval mode), and the batch variances
    they see in training mode over the training split (on a copy: the model is left as it is)."""
    norms = regulation_norms(model)
    running = np.array([float(n.running_var) for n in norms])  # (2L,)
    eps = np.array([n.eps for n in norms])
    probe = copy.deepcopy(model).train()
    batch_vars: list[list[float]] = [[] for _ in norms]
    hooks = [
        norm.register_forward_hook(
            lambda m, inputs, out, i=i: batch_vars[i].append(float(inputs[0].var(unbiased=False)))
        )
        for i, norm in enumerate(regulation_norms(probe))
    ]
    x, _ = data.arrays("train")
    ids = torch.from_numpy(np.array(x, dtype=np.int64))
    for start in range(0, len(ids), batch_size):
        probe(ids[start : start + batch_size])
    for hook in hooks:
        hook.remove()
    batch = np.array(batch_vars)  # (2L, batches)
    eval_gain = 1.0 / np.sqrt(running + eps)  # (2L,)
    train_gain = 1.0 / np.sqrt(batch + eps[:, None])  # (2L, batches)
    return {
        "running_var": running.tolist(),
        "eps": eps.tolist(),
        "batch_var": batch.ravel().tolist(),
        "eval_gain": eval_gain.tolist(),
        "train_over_eval_gain": (train_gain / eval_gain[:, None]).ravel().tolist(),
    }


def quantiles(values: list[float]) -> list[float]:
    return [float(q) for q in np.quantile(np.asarray(values), QUANTILES)]


def paired(a: list[float], b: list[float]) -> dict:
    """Mean paired difference a - b, its standard error and whether |mean| <= 2 SE."""
    diff = np.asarray(a) - np.asarray(b)
    n = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    mean = float(diff.mean())
    return {"n": n, "mean": mean, "se": se, "within_2se": bool(abs(mean) <= 2 * se) if n > 1
            else None}


def run_dataset(dataset: str, data: PreparedData, seeds: list[int], epochs: int,
                batch_size: int) -> dict:
    """Every variant over ``seeds``: test AUCs, best epochs and the norm statistics."""
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr_emb=LR, lr_nn=LR,
                            l2_emb=0.0, l2_nn=0.0, patience=2, device="cpu", progress=False)
    out: dict[str, dict] = {}
    for name, (model, cfg) in VARIANTS.items():
        aucs, epochs_best, stats, started = [], [], [], time.perf_counter()
        for seed in seeds:  # one seed at a time: keeps a single model in memory
            run = run_seeds(model, cfg, data, train_cfg, [seed])
            aucs.append(float(run.frame.iloc[0]["test_auc"]))
            epochs_best.append(int(run.frame.iloc[0]["best_epoch"]))
            if model == "edcn" and cfg.regulation_batch_norm:
                stats.append(norm_statistics(run.models[0], data, batch_size))
        entry = {"test_auc": aucs, "best_epoch": epochs_best,
                 "seconds": round(time.perf_counter() - started, 1)}
        if stats:
            entry["norm"] = {key: quantiles([v for s in stats for v in s[key]])
                             for key in stats[0] if key != "eps"}
            entry["norm"]["eps"] = stats[0]["eps"][0]
        out[name] = entry
        print(f"{dataset} {name}: test AUC {np.mean(aucs):.4f} (best epoch "
              f"{np.mean(epochs_best):.1f}), {entry['seconds']} s", flush=True)
    return out


def print_report(results: dict) -> list[dict]:
    """Print the tables; return the JSON records."""
    records = []
    q = " / ".join(f"q{int(100 * p)}" for p in QUANTILES)
    for dataset, variants in results.items():
        print(f"\n{dataset}: regulation batch norm after training ({q} over seeds and norms)")
        print("| variant | eps | running var | var / eps | eval gain 1/sqrt(var+eps) | "
              "batch var (train mode) | train gain / eval gain |")
        print("|---|---:|---|---|---|---|---|")
        for name, entry in variants.items():
            if "norm" not in entry:
                continue
            norm, eps = entry["norm"], entry["norm"]["eps"]

            def fmt(values, spec=".1e"):
                return " / ".join(f"{v:{spec}}" for v in values)

            print(f"| {name} | {eps:g} | {fmt(norm['running_var'])} | "
                  f"{fmt([v / eps for v in norm['running_var']], '.3f')} | "
                  f"{fmt(norm['eval_gain'], '.0f')} | {fmt(norm['batch_var'])} | "
                  f"{fmt(norm['train_over_eval_gain'], '.2f')} |")
            records.append({"metric": f"{dataset} {name} regulation running var / eps, median",
                            "value": norm["running_var"][2] / eps, "unit": "ratio",
                            "target": None, "met": None,
                            "note": f"running var quantiles {fmt(norm['running_var'])}"})
        print(f"\n{dataset}: test AUC, paired over seeds (same seed: same initial weights and "
              "batch order)")
        print("| variant | n | test AUC | best epoch | - default (SE) | within 2 SE | "
              "- dcn (SE) | within 2 SE |")
        print("|---|---:|---:|---:|---|---|---|---|")
        for name, entry in variants.items():
            row = [name, str(len(entry["test_auc"])), f"{np.mean(entry['test_auc']):.4f}",
                   f"{np.mean(entry['best_epoch']):.1f}"]
            for partner in ("default", "dcn"):
                if partner == name:
                    row += ["-", "-"]
                    continue
                stat = paired(entry["test_auc"], variants[partner]["test_auc"])
                within = "-" if stat["within_2se"] is None else "yes" if stat["within_2se"] \
                    else "NO"
                row += [f"{stat['mean']:+.4f} ({stat['se']:.4f})", within]
                records.append({
                    "metric": f"{dataset} {name} minus {partner}, paired test AUC",
                    "value": stat["mean"], "unit": "AUC",
                    "target": "|mean| <= 2 SE" if partner == "dcn" else None,
                    "met": stat["within_2se"] if partner == "dcn" else None,
                    "note": f"SE {stat['se']:.4f}, n {stat['n']}; {name} test AUC "
                            f"{np.mean(entry['test_auc']):.4f}"})
            print("| " + " | ".join(row) + " |")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--datasets", nargs="+", default=list(RAW_FILES), choices=list(RAW_FILES))
    parser.add_argument("--epochs", type=int, default=10, help="upper bound on epochs (10)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--quick", action="store_true",
                        help="2 seeds, Criteo only, 3 epochs (a smoke run, ~20 s of CPU)")
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.datasets, args.epochs = 2, ["criteo"], 3
    root = os.environ.get("OPTFUSION_REAL_SAMPLES")
    if not root:
        raise SystemExit("set OPTFUSION_REAL_SAMPLES to the real_samples folder (see SOURCES.md)")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; load average {load()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="optfusion_edcn_probe_") as tmp:
        for dataset in args.datasets:
            raw = Path(root) / RAW_FILES[dataset]
            if not raw.is_file():
                raise SystemExit(f"{raw} not found; is OPTFUSION_REAL_SAMPLES right?")
            prepare(raw, Path(tmp) / dataset, PrepareConfig(dataset, threshold=2, seed=42))
            data = PreparedData.open(Path(tmp) / dataset)
            results[dataset] = run_dataset(dataset, data, list(range(args.seeds)), args.epochs,
                                           args.batch_size)
    records = print_report(results)
    if args.json is not None:
        write_json(args.json, {"benchmark": "edcn_probe",
                               "machine": environment("torch", load_average=load()),
                               "arguments": {k: str(v) for k, v in vars(args).items()},
                               "records": records, "runs": results})
    print(json.dumps({"records": len(records)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
