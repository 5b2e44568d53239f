"""The ``search`` and ``retrain`` subcommands of ``optfusion-lab``.

Building the parsers imports neither torch nor the models; the commands import them when they
run. Errors the user can fix raise ValueError or FileNotFoundError (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .names import ALGORITHMS, BETA_INITS, DESIGNS, OPERATIONS, SELECTIONS, SHALLOW_BLOCKS
from .presets import SEARCH_PRESETS
from .train_cli import DEFAULT_SEEDS, _plain_arguments, add_loop_arguments, format_train_summary

COLLAPSED = 3  # exit code of a search that finished but whose best state has no genotype


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="a dataset prepared by `optfusion-lab prepare`")
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR")
    add_loop_arguments(p)


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    presets = "\n".join(f"  {p.name:<8}{p.description}" for p in SEARCH_PRESETS.values())
    p = subparsers.add_parser(
        "search",
        help="one-shot OptFusion search of connections and operations",
        description="Train the OptFusion supernet with its architecture (alpha: edges, beta: "
        "operations) in one joint, single-level run; keep the best validation epoch and write "
        "RUN_DIR/genotype.json, history.csv (alpha/softmax(beta)), epochs.csv, config.json, "
        "result.json and supernet.pt (for warm-started retraining).",
        epilog=f"presets (default: the data's dataset, else tiny):\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("--preset", metavar="NAME", help=f"one of: {', '.join(SEARCH_PRESETS)}")
    p.add_argument("--embed-dim", type=int, metavar="N")
    p.add_argument("--layers", type=int, metavar="N", help="layers L of the fusion graph")
    p.add_argument("--shallow", choices=SHALLOW_BLOCKS, default="cross")
    p.add_argument("--operations", default=",".join(OPERATIONS), metavar="OPS",
                   help="comma-separated candidate operations (default add,prod,concat,att); "
                   "one operation gives the fixed-operation ablation; att-lite is a cheaper ATT "
                   "(rank-32 attention nets) for large d")
    p.add_argument("--design", choices=DESIGNS,
                   help="fix the edges to a hand-made design and learn the operations only")
    p.add_argument("--alpha-init", type=float, default=0.5, metavar="X",
                   help="every edge's alpha starts at X (default 0.5, the reference: all on)")
    p.add_argument("--beta-init", choices=BETA_INITS, default="xavier",
                   help="xavier: each node's beta row Xavier normal, std sqrt(2/(1+ops)) (the "
                   "reference, default); uniform: equal operation weights; normal: N(0, "
                   "--beta-init-std)")
    p.add_argument("--beta-init-std", type=float, default=0.1, metavar="X",
                   help="std of --beta-init normal (default 0.1)")
    p.add_argument("--arch-lr", type=float, metavar="X", help="Adam lr of alpha and beta")
    p.add_argument("--gate-sparsity", type=float, default=0.0, metavar="X",
                   help="ours, not the paper's (default 0: off): each active edge costs X in the "
                   "architecture's objective, so edges the loss does not need switch off")
    p.add_argument("--stop-when-settled", type=int, metavar="STEPS",
                   help="ours, not the paper's (default: off, the full search): end each search "
                   "phase once the derived genotype (active edges, argmax operations) has not "
                   "changed for STEPS steps; the unfinished epoch is validated and the best "
                   "epoch kept as usual")
    p.add_argument("--history-every", type=int, default=20, metavar="N",
                   help="record alpha/beta every N steps (default 20)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="one-shot",
                   help="one-shot (the paper's joint search, default), sequential (edges with "
                   "ADD fixed, then operations with edges frozen) or bilevel (first-order DARTS: "
                   "architecture steps on validation batches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="one search per seed into RUN_DIR/seed_<s>/, plus a stability summary "
                   "(how often each edge is live and each operation wins across seeds)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR's checkpoint (written after every epoch); on a "
                   "finished run it changes nothing")
    p.add_argument("--truth", type=Path, metavar="GENOTYPE",
                   help="score the found genotype against a known one (the teacher's)")
    p.set_defaults(func=run_search)
    return p


def add_retrain_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "retrain",
        help="train the derived model of a genotype, once per seed",
        description="Build the derived model of a genotype (hard: argmax operation per node; "
        "soft: fixed softmax(beta) mixture), optionally warm-started from a search run's "
        "supernet weights (the reference's default), train it with early stopping once per "
        "seed and write RUN_DIR/result.json in the shape of `optfusion-lab train`. Defaults "
        "come from the search run's config.json (next to the genotype, or --warm-start).",
    )
    _common(p)
    p.add_argument("--genotype", required=True, type=Path, metavar="FILE")
    p.add_argument("--selection", choices=SELECTIONS, default="hard")
    p.add_argument("--warm-start", type=Path, metavar="SEARCH_RUN_DIR",
                   help="start from this search run's supernet weights (default: from scratch)")
    default_seeds = " ".join(map(str, DEFAULT_SEEDS))
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help=f"one run per seed (default: {default_seeds})")
    p.set_defaults(func=run_retrain)
    return p


def _train_config(base, args):
    """``base`` TrainConfig with the command line's choices applied."""
    import dataclasses

    changes = {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
               "lr_emb": args.lr, "lr_nn": args.lr, "l2_emb": args.l2, "l2_nn": args.l2,
               "embedding_update": args.embedding_update}
    return dataclasses.replace(
        base,
        **{k: v for k, v in changes.items() if v is not None},
        device=args.device, amp=args.amp, compile=args.compile, shuffle=not args.no_shuffle,
        keep_freed_memory=not args.release_freed_memory,
        progress=not args.no_progress,
    )


def run_search(args: argparse.Namespace) -> int:
    from .data.dataset import PreparedData
    from .distributed import init_from_env, is_main_process
    from .fusion_search import SearchConfig, search_run, search_seeds
    from .models.genotype import Genotype
    from .models.supernet import SupernetConfig
    from .presets import check_preset_fits, default_preset_name, get_search_preset
    from .train import TrainConfig, TrainingDivergedError, resolve_device

    data = PreparedData.open(args.data)
    name = args.preset or default_preset_name(data.meta)
    preset = get_search_preset(name)
    check_preset_fits(preset, data.meta)
    operations = tuple(op.strip() for op in args.operations.split(",") if op.strip())
    supernet_cfg = SupernetConfig(
        embed_dim=args.embed_dim or preset.embed_dim,
        num_layers=args.layers or preset.num_layers,
        shallow=args.shallow,
        operations=operations,
        alpha_init=args.alpha_init,
        beta_init=args.beta_init,
        beta_init_std=args.beta_init_std,
    )
    base = TrainConfig(batch_size=preset.batch_size, epochs=preset.epochs, seed=args.seed,
                       lr_emb=preset.lr, lr_nn=preset.lr, l2_emb=preset.l2,
                       l2_nn=preset.l2)
    train_cfg = _train_config(base, args)
    search_cfg = SearchConfig(
        arch_lr=args.arch_lr if args.arch_lr is not None else preset.arch_lr,
        history_every=args.history_every,
        design=args.design,
        algorithm=args.algorithm,
        gate_sparsity=args.gate_sparsity,
        settle_steps=args.stop_when_settled,
    )
    truth = Genotype.load(args.truth) if args.truth is not None else None
    resolve_device(train_cfg.device)
    init_from_env()  # under torchrun: join the process group (one process per GPU)
    metadata = {"preset": name, "arguments": _plain_arguments(args)}
    show = is_main_process()
    try:
        if not args.seeds:
            result = search_run(args.out, data, supernet_cfg, train_cfg, search_cfg,
                                resume=args.resume, metadata=metadata, truth=truth)
            return _report_search(args.out, result, search_cfg, show)
        codes = []

        def report(seed: int, result) -> None:
            codes.append(_report_search(args.out / f"seed_{seed}", result, search_cfg, show))

        _, stability = search_seeds(data, supernet_cfg, train_cfg, search_cfg, args.seeds,
                                    on_result=report, out_dir=args.out, resume=args.resume,
                                    metadata=metadata, truth=truth)
    except TrainingDivergedError as exc:
        print(f"optfusion-lab search: error: {exc}", file=sys.stderr)
        return 1
    if codes[-1] not in (0, COLLAPSED):
        return codes[-1]
    if show and stability is not None:
        print(f"stability over seeds {stability['seeds']} -> {args.out}/stability.json")
        print(stability["edges"].to_string(index=False, max_rows=60))
    collapsed = [seed for seed, code in zip(args.seeds, codes, strict=False) if code == COLLAPSED]
    if collapsed:
        print(f"optfusion-lab search: seeds {collapsed} collapsed (no genotype; see their "
              "result.json)", file=sys.stderr)
        return COLLAPSED
    return 0


def _report_search(out: Path, result, search_cfg, show: bool) -> int:
    """Print what a search into ``out`` left; return the exit code (130 when it was stopped)."""
    if result is None:
        if show:
            print(f"{out}: the search finished already; nothing to resume")
        return 0 if (out / "genotype.json").is_file() else COLLAPSED  # result.json says why
    if result.stopped:
        print(f"optfusion-lab search: stopped ({result.stop_reason}); the checkpoint in {out} "
              "keeps every finished epoch: continue with --resume", file=sys.stderr)
        return 130
    if result.genotype is None:
        if show:
            print(f"optfusion-lab search: {result.collapse} ({out}/)", file=sys.stderr)
        return COLLAPSED
    if not show:
        return 0
    fit = result.fit
    print(result.genotype)
    document = json.loads((out / "result.json").read_text())
    score = document.get("metadata", {}).get("score_against_truth")
    if score is not None:
        print("against the truth: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
    resumed = ""
    if fit.resumed_from_epoch is not None:
        resumed = f", resumed after epoch {fit.resumed_from_epoch}"
    for phase, (step, total) in result.settled.items():
        print(f"phase {phase} settled at its step {step} (search step {total}): the genotype had "
              f"not changed for {search_cfg.settle_steps} steps")
    print(f"supernet ({search_cfg.algorithm}{resumed}): best valid AUC "
          f"{fit.best_valid_auc:.5f} (epoch {fit.best_epoch}), test AUC {fit.test_auc:.5f}, "
          f"LogLoss {fit.test_logloss:.5f}, {result.search_seconds:.1f} s -> {out}/")
    return 0


def run_retrain(args: argparse.Namespace) -> int:
    from .data.dataset import PreparedData
    from .distributed import init_from_env, is_main_process
    from .fusion_search import load_warm_start, retrain, retrain_defaults
    from .models.genotype import Genotype
    from .train import TrainingDivergedError, resolve_device

    data = PreparedData.open(args.data)
    genotype = Genotype.load(args.genotype)
    if genotype.num_fields != data.num_fields:
        raise ValueError(f"{args.genotype} was searched on data with {genotype.num_fields} "
                         f"fields; {args.data} has {data.num_fields}")
    search_dir = args.warm_start or args.genotype.parent  # the search run's config.json
    base, preset_name, config = retrain_defaults(data, args.selection, search_dir,
                                                 warm_start=args.warm_start is not None)
    metadata = {"arguments": _plain_arguments(args)}
    if config is not None:
        metadata["search_config"] = config
    train_cfg = _train_config(base, args)
    warm = load_warm_start(args.warm_start, data) if args.warm_start is not None else None
    seeds = list(args.seeds) if args.seeds else list(DEFAULT_SEEDS)
    resolve_device(train_cfg.device)
    init_from_env()
    try:
        run = retrain(data, genotype, train_cfg, seeds, selection=args.selection,
                      warm_start=warm, out_dir=args.out, metadata=metadata)
    except TrainingDivergedError as exc:
        print(f"optfusion-lab retrain: error: {exc}", file=sys.stderr)
        return 1
    if not is_main_process():
        return 0
    init = "warm start" if warm is not None else "from scratch"
    print(format_train_summary(f"optfusion-{args.selection} ({init})", data.meta["dataset"],
                               preset_name, run, args.out))
    return 130 if run.stopped else 0
