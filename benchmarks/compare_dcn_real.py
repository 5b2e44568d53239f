"""Accuracy of the library's DCN against the lean DCN, and of every baseline, on real Criteo rows.

What it does
------------
1. Prepares the real Kaggle Criteo rows
   ``$OPTFUSION_REAL_SAMPLES/criteo/kaggle2014criteo_train.tiny.csv``
   (default ``OPTFUSION_REAL_SAMPLES=/work/shared/real_samples``; 1,999 rows) into a temporary
   directory with ``PrepareConfig("criteo", threshold=2, seed=42)``: an 8:1:1 split, so about
   1,600 training, 200 validation and 200 test rows. The rows are never copied into the
   repository; the temporary directory is deleted at the end.
2. Trains (a) the library's ``dcn`` with ``optfusion_lab.train.run_seeds`` and (b) the lean DCN
   of ``lean_dcn.py`` with its own loop, over the same seeds, on the same split, with the same
   settings: batch 1024, up to 3 epochs, early stopping on valid AUC with ``--patience`` (1 by
   default, as the reference; ``--patience 3`` makes all 3 epochs run), embedding dim 16, MLP
   400-400-400, 3 cross layers, lr 2e-3 and L2 3e-6 on both Adam groups (the DCN row of the
   Criteo preset, ``optfusion_lab.presets``), CPU.
3. Reports test AUC and LogLoss (mean +- sample std over seeds) for both, and the noise:
   the seed-to-seed std, the standard error of the difference of the two means
   (``sqrt(s_a^2/n + s_b^2/n)``), and the test-set sampling noise (bootstrap over the ~200 test
   rows: the standard error of one model's test AUC, and a paired bootstrap of the difference of
   the seed-averaged AUCs). The difference is called "within noise" when it is smaller than
   twice its seed standard error. With the same seed both models start from the same weights
   (the lean model draws its initial weights in the library's order) and see the same batch
   order, so the script also prints the largest difference of their test probabilities. The
   comparison is then repeated over ``--noise-seeds`` seeds (10 by default) with *disjoint*
   seeds (library 0..N-1, lean 1000..1000+N-1): two independent samples of runs, which shows
   the seed-to-seed noise with more seeds and how far two independent means fall apart.
4. Trains every baseline in ``MODELS`` once per seed (3 seeds) with the same settings through
   ``run_seeds`` and prints test AUC / LogLoss mean +- std, flagging any baseline whose mean AUC
   is far below DCN's: more than twice the seed standard error of the difference *and* more than
   twice its paired bootstrap standard error over the test rows. Three seeds estimate a std
   poorly (three runs can agree by chance), so a flagged baseline is rerun, with dcn, over the
   ``--noise-seeds`` seeds, and the script says whether the gap survives.

How to run
----------
::

    .venv/bin/python benchmarks/compare_dcn_real.py
    .venv/bin/python benchmarks/compare_dcn_real.py --patience 3 --noise-seeds 20 --json out.json
    OPTFUSION_REAL_SAMPLES=/path/to/real_samples .venv/bin/python benchmarks/compare_dcn_real.py

With 1,600 training rows and batch 1024 an epoch is 2 optimizer steps, so 3 epochs are at most
6 steps: the models are barely trained and the comparison is about equivalence of the two
implementations under identical settings, not about reaching a good Criteo AUC.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from lean_dcn import LeanConfig, build_lean, load_split, predict_lean, train_lean
from sklearn.metrics import roc_auc_score

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.prepare import PrepareConfig, prepare
from optfusion_lab.models import MODELS, ModelConfig
from optfusion_lab.presets import PRESETS
from optfusion_lab.train import TrainConfig, load_run, predict_proba, run_seeds

DEFAULT_REAL_SAMPLES = "/work/shared/real_samples"
RAW_FILE = Path("criteo") / "kaggle2014criteo_train.tiny.csv"
BATCH_SIZE = 1024
EPOCHS = 3
EMBED_DIM = 16
MLP_DIMS = (400, 400, 400)
CROSS_LAYERS = 3
BOOTSTRAP = 2000  # bootstrap resamples of the test rows
LEAN_SEED_OFFSET = 1000  # the noise study's lean seeds are disjoint from the library's


def load() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())


def mean_std(values) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def pm(values, digits: int = 4) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def bootstrap_auc(labels: np.ndarray, probs: list[np.ndarray], rng: np.random.Generator | None,
                  resamples: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The seed-averaged test AUC on bootstrap resamples of the test rows: (BOOTSTRAP,)."""
    n = len(labels)
    if resamples is None:
        assert rng is not None
        resamples = rng.integers(0, n, size=(BOOTSTRAP, n))
    out = np.empty(len(resamples))
    for i, idx in enumerate(resamples):
        y = labels[idx]
        if y.min() == y.max():  # one class only: no AUC; count it as missing
            out[i] = np.nan
            continue
        out[i] = np.mean([roc_auc_score(y, p[idx]) for p in probs])
    return out


def library_runs(name: str, data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 seeds: list[int], run_dir: Path) -> tuple[dict, list[np.ndarray]]:  # fmt: skip
    """run_seeds(name): per-seed metrics and test probabilities (from the saved weights)."""
    frame, _ = run_seeds(name, model_cfg, data, train_cfg, seeds, out_dir=run_dir)
    x_test, _ = data.arrays("test")
    probs = []
    for seed in seeds:
        model, _ = load_run(run_dir, seed=seed)
        probs.append(predict_proba(model, x_test))
    columns = ("test_auc", "test_logloss", "best_valid_auc", "best_epoch", "epochs_run",
               "num_parameters")  # fmt: skip
    return {k: frame[k].tolist() for k in columns}, probs


def lean_dcn(data: PreparedData, lean_cfg: LeanConfig, seeds: list[int]):
    """The lean DCN's loop over ``seeds``: per-seed test metrics and test probabilities."""
    x_test, _ = load_split(data, "test")
    metrics: dict[str, list] = {"test_auc": [], "test_logloss": [], "best_epoch": [],
                                "epochs_run": []}  # fmt: skip
    probs = []
    for seed in seeds:
        cfg = LeanConfig(**{**asdict(lean_cfg), "seed": seed})
        model = build_lean(data.num_features, data.num_fields, cfg)
        result = train_lean(model, data, cfg)
        for key in metrics:
            metrics[key].append(result[key])
        probs.append(predict_lean(model, x_test))
    return metrics, probs


def compare(title: str, data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
            lean_cfg: LeanConfig, seeds: list[int], lean_seeds: list[int],
            work: Path) -> dict:  # fmt: skip
    """Library dcn over ``seeds`` against the lean DCN over ``lean_seeds``; print and return."""
    started = time.perf_counter()
    lib, lib_probs = library_runs("dcn", data, model_cfg, train_cfg, seeds,
                                  work / f"dcn_{len(seeds)}")  # fmt: skip
    lean, lean_probs = lean_dcn(data, lean_cfg, lean_seeds)
    _, y_test = data.arrays("test")
    labels = np.asarray(y_test, dtype=np.float64)
    # sanity: the probabilities reproduce the reported test AUCs
    for name, metrics, probs in (("dcn", lib, lib_probs), ("lean", lean, lean_probs)):
        recomputed = [roc_auc_score(labels, p) for p in probs]
        if not np.allclose(recomputed, metrics["test_auc"], atol=1e-9):
            raise SystemExit(f"{name}: recomputed test AUCs {recomputed} != {metrics['test_auc']}")

    rng = np.random.default_rng(12345)
    resamples = rng.integers(0, len(labels), size=(BOOTSTRAP, len(labels)))
    boot_lib = bootstrap_auc(labels, lib_probs, rng, resamples)
    boot_lean = bootstrap_auc(labels, lean_probs, rng, resamples)
    boot_single = bootstrap_auc(labels, lib_probs[:1], rng, resamples)
    n = len(seeds)
    auc_lib, sd_lib = mean_std(lib["test_auc"])
    auc_lean, sd_lean = mean_std(lean["test_auc"])
    ll_lib, ll_sd_lib = mean_std(lib["test_logloss"])
    ll_lean, ll_sd_lean = mean_std(lean["test_logloss"])
    diff = auc_lib - auc_lean
    se_diff = math.sqrt(sd_lib**2 / n + sd_lean**2 / n)
    ll_diff = ll_lib - ll_lean
    ll_se_diff = math.sqrt(ll_sd_lib**2 / n + ll_sd_lean**2 / n)
    boot_se_single = float(np.nanstd(boot_single, ddof=1))
    boot_se_diff = float(np.nanstd(boot_lib - boot_lean, ddof=1))
    within = abs(diff) <= 2 * se_diff
    ll_within = abs(ll_diff) <= 2 * ll_se_diff

    seconds = time.perf_counter() - started
    print(f"\n== {title}: library seeds {seeds[0]}..{seeds[-1]}, lean seeds {lean_seeds[0]}.."
          f"{lean_seeds[-1]} ({seconds:.0f} s, load {load()}) ==")  # fmt: skip
    print(f"{'model':<22} {'test AUC':>18} {'test LogLoss':>18} {'best epochs':>14}")
    for name, m in (("library dcn (run_seeds)", lib), ("lean DCN", lean)):
        print(f"{name:<22} {pm(m['test_auc']):>18} {pm(m['test_logloss']):>18} "
              f"{','.join(map(str, m['best_epoch'])):>14}")  # fmt: skip
    print(f"per-seed test AUC: dcn {[round(v, 4) for v in lib['test_auc']]}, "
          f"lean {[round(v, 4) for v in lean['test_auc']]}")  # fmt: skip
    print(f"difference dcn - lean: AUC {diff:+.4f} (seed SE of the difference {se_diff:.4f}; "
          f"{'within' if within else 'OUTSIDE'} 2 SE), LogLoss {ll_diff:+.4f} (SE "
          f"{ll_se_diff:.4f}; {'within' if ll_within else 'OUTSIDE'} 2 SE)")  # fmt: skip
    max_prob_diff = None
    if seeds == lean_seeds:
        max_prob_diff = [float(np.max(np.abs(a - b))) for a, b in zip(lib_probs, lean_probs,
                                                                     strict=True)]  # fmt: skip
        print(f"same seeds: max |p_dcn - p_lean| over the test rows, per seed: "
              f"{', '.join(f'{v:.1e}' for v in max_prob_diff)}")  # fmt: skip
    print(f"seed-to-seed std of test AUC: dcn {sd_lib:.4f}, lean {sd_lean:.4f}; test-set "
          f"bootstrap SE of one run's AUC ({len(labels)} rows, {BOOTSTRAP} resamples): "
          f"{boot_se_single:.4f}; paired bootstrap SE of the AUC difference of the "
          f"{n}-seed means: {boot_se_diff:.4f}")  # fmt: skip
    return {
        "seeds": seeds,
        "lean_seeds": lean_seeds,
        "max_test_prob_difference": max_prob_diff,
        "library_dcn": lib,
        "lean_dcn": lean,
        "auc_difference": diff,
        "auc_difference_seed_se": se_diff,
        "auc_within_2se": within,
        "logloss_difference": ll_diff,
        "logloss_difference_seed_se": ll_se_diff,
        "logloss_within_2se": ll_within,
        "bootstrap_se_single_auc": boot_se_single,
        "bootstrap_se_auc_difference": boot_se_diff,
    }


def baselines(data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
              seeds: list[int], preset_lr: bool, confirm_seeds: list[int],
              work: Path) -> list[dict]:  # fmt: skip
    """Every baseline over ``seeds``; a baseline flagged far below dcn is rerun on more seeds."""
    _, y_test = data.arrays("test")
    labels = np.asarray(y_test, dtype=np.float64)
    resamples = np.random.default_rng(54321).integers(0, len(labels), (BOOTSTRAP, len(labels)))

    def configured(name: str) -> TrainConfig:
        if not preset_lr:
            return train_cfg
        lr, l2 = PRESETS["criteo"].learning_rates[name]
        return TrainConfig(**{**asdict(train_cfg), "lr_emb": lr, "l2_emb": l2, "lr_nn": lr,
                              "l2_nn": l2})  # fmt: skip

    rows, boot = [], {}
    for name in MODELS:
        started = time.perf_counter()
        cfg = configured(name)
        metrics, probs = library_runs(name, data, model_cfg, cfg, seeds, work / f"base_{name}")
        boot[name] = bootstrap_auc(labels, probs, None, resamples)
        rows.append({"model": name, "lr": cfg.lr_nn, "l2": cfg.l2_nn, **metrics,
                     "seconds": time.perf_counter() - started})  # fmt: skip
        print(f"  {name:<15} done in {rows[-1]['seconds']:.1f} s (load {load()})", flush=True)
    dcn_auc = next(r for r in rows if r["model"] == "dcn")["test_auc"]
    dcn_mean, dcn_sd = mean_std(dcn_auc)
    n = len(seeds)
    print(f"\n{'model':<15} {'lr / l2':>13} {'params':>10} {'test AUC':>18} {'test LogLoss':>18} "
          f"{'valid AUC':>9} {'best ep.':>8} {'vs dcn':>8} {'seed SE':>7} {'boot SE':>7}  "
          f"flag")  # fmt: skip
    for r in rows:
        mean, sd = mean_std(r["test_auc"])
        diff = mean - dcn_mean
        se = math.sqrt(sd**2 / n + dcn_sd**2 / n)
        boot_se = float(np.nanstd(boot[r["model"]] - boot["dcn"], ddof=1))
        far = r["model"] != "dcn" and diff < -2 * se and diff < -2 * boot_se
        r.update(auc_vs_dcn=diff, seed_se=se, paired_bootstrap_se=boot_se, far_below_dcn=far)
        print(f"{r['model']:<15} {r['lr']:>6.0e}/{r['l2']:<6.0e} {r['num_parameters'][0]:>10,} "
              f"{pm(r['test_auc']):>18} {pm(r['test_logloss']):>18} "
              f"{np.mean(r['best_valid_auc']):>9.4f} {','.join(map(str, r['best_epoch'])):>8} "
              f"{diff:>+8.4f} {se:>7.4f} {boot_se:>7.4f}  "
              f"{'FAR BELOW DCN' if far else ''}")  # fmt: skip
    print("vs dcn: difference of the mean test AUCs; seed SE: sqrt(s^2/n + s_dcn^2/n) over seeds; "
          "boot SE: paired bootstrap SE of that difference\nover the test rows (same resamples for "
          "both models); FAR BELOW DCN: more than 2 seed SEs and more than 2 boot SEs below dcn")

    flagged = [r for r in rows if r["far_below_dcn"]]
    if flagged and confirm_seeds:
        print(f"\nconfirming the flagged baselines on {len(confirm_seeds)} seeds "
              f"({confirm_seeds[0]}..{confirm_seeds[-1]}), against dcn on the same seeds:")
        dcn_more, _ = library_runs("dcn", data, model_cfg, configured("dcn"), confirm_seeds,
                                   work / "confirm_dcn")  # fmt: skip
        m_dcn, s_dcn = mean_std(dcn_more["test_auc"])
        k = len(confirm_seeds)
        for r in flagged:
            more, _ = library_runs(r["model"], data, model_cfg, configured(r["model"]),
                                   confirm_seeds, work / f"confirm_{r['model']}")  # fmt: skip
            m, sd = mean_std(more["test_auc"])
            se = math.sqrt(sd**2 / k + s_dcn**2 / k)
            still = m - m_dcn < -2 * se
            r.update(confirm_test_auc=more["test_auc"], confirm_dcn_test_auc=dcn_more["test_auc"],
                     confirmed_far_below=still)  # fmt: skip
            print(f"  {r['model']:<15} test AUC {m:.4f} +- {sd:.4f} vs dcn {m_dcn:.4f} +- "
                  f"{s_dcn:.4f}: difference {m - m_dcn:+.4f}, seed SE {se:.4f} -> "
                  f"{'still far below' if still else 'within 2 SE: the 3-seed flag was noise'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patience", type=int, default=1,
                        help="early-stopping patience (default 1, the reference; 3 = all epochs)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--noise-seeds", type=int, default=10,
                        help="seeds of the second, noise-estimating comparison (default 10; 0 "
                             "skips it)")
    parser.add_argument("--skip-baselines", action="store_true", help="only the DCN comparison")
    parser.add_argument("--preset-lr", action="store_true",
                        help="baselines use their own Criteo-preset lr / L2 instead of DCN's")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)  # fmt: skip

    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("OPTFUSION_REAL_SAMPLES", DEFAULT_REAL_SAMPLES))
    raw = root / RAW_FILE
    if not raw.is_file():
        raise SystemExit(f"{raw} not found; set OPTFUSION_REAL_SAMPLES to the real_samples folder")
    lr, l2 = PRESETS["criteo"].learning_rates["dcn"]
    model_cfg = ModelConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS)
    train_cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, lr_emb=lr, l2_emb=l2, lr_nn=lr,
                            l2_nn=l2, patience=args.patience, device="cpu",
                            threads=args.threads, progress=False)  # fmt: skip
    lean_cfg = LeanConfig(embed_dim=EMBED_DIM, mlp_dims=MLP_DIMS, cross_layers=CROSS_LAYERS,
                          batch_size=BATCH_SIZE, epochs=EPOCHS, patience=args.patience,
                          lr_emb=lr, l2_emb=l2, lr_nn=lr, l2_nn=l2)  # fmt: skip
    load_start = load()
    print(f"torch {torch.__version__}, {args.threads} threads; load average at start {load_start}")
    print(f"settings: batch {BATCH_SIZE}, up to {EPOCHS} epochs, patience {args.patience}, "
          f"embed dim {EMBED_DIM}, MLP {'-'.join(map(str, MLP_DIMS))}, {CROSS_LAYERS} cross "
          f"layers, lr {lr:g} / l2 {l2:g} (Criteo preset, dcn), CPU")  # fmt: skip

    report: dict = {"settings": {"train_config": asdict(train_cfg),
                                 "model_config": asdict(model_cfg),
                                 "lean_config": asdict(lean_cfg), "raw": raw.name}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="optfusion_real_") as tmp:
        work = Path(tmp)
        meta = prepare(raw, work / "criteo", PrepareConfig("criteo", threshold=2, seed=42))
        data = PreparedData.open(work / "criteo")
        n_train = meta["num_rows"]["train"]
        print(f"data: {raw.name} prepared (threshold 2, seed 42) into a temporary directory: "
              f"{meta['num_rows']} rows, {meta['num_features']:,} features; "
              f"{-(-n_train // BATCH_SIZE)} optimizer steps per epoch")  # fmt: skip
        _, y_test = data.arrays("test")
        print(f"test split: {len(y_test)} rows, {int(np.sum(y_test))} clicks")
        report["data"] = {"num_rows": meta["num_rows"], "num_features": meta["num_features"]}

        main_seeds = list(range(args.seeds))
        report["comparison"] = compare("library dcn vs lean DCN, same seeds", data, model_cfg,
                                       train_cfg, lean_cfg, main_seeds, main_seeds, work)
        if args.noise_seeds > 0:  # disjoint seeds: two independent samples of runs
            lib_seeds = list(range(args.noise_seeds))
            lean_seeds = [LEAN_SEED_OFFSET + s for s in lib_seeds]
            report["noise"] = compare("noise estimate, independent seeds", data, model_cfg,
                                      train_cfg, lean_cfg, lib_seeds, lean_seeds, work)
        if not args.skip_baselines:
            how = "own Criteo-preset lr / L2" if args.preset_lr else f"lr {lr:g} / l2 {l2:g}"
            print(f"\n== every baseline, seeds {main_seeds}, same settings ({how}) ==")
            confirm = list(range(args.noise_seeds)) if args.noise_seeds > args.seeds else []
            report["baselines"] = baselines(data, model_cfg, train_cfg, main_seeds,
                                            args.preset_lr, confirm, work)  # fmt: skip
    load_end = load()
    print(f"\nload average (1, 5, 15 min): {load_start} at start, {load_end} at the end")
    if args.json:
        report.update(load_start=load_start, load_end=load_end)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
