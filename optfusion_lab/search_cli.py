"""The ``search`` and ``retrain`` subcommands of ``optfusion-lab``.

Building the parsers imports neither torch nor the models; the commands import them when they
run. Errors the user can fix raise ValueError or FileNotFoundError (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .names import ALGORITHMS, DESIGNS, OPERATIONS, SELECTIONS, SHALLOW_BLOCKS
from .presets import SEARCH_PRESETS
from .train_cli import DEFAULT_SEEDS, _plain_arguments, add_loop_arguments, format_train_summary


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
    p.add_argument("--alpha-init", type=float, default=0.5, metavar="X")
    p.add_argument("--arch-lr", type=float, metavar="X", help="Adam lr of alpha and beta")
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


def _train_config(base, args, lr_l2: tuple[float, float]):
    """``base`` TrainConfig with the command line's choices applied."""
    import dataclasses

    lr = args.lr if args.lr is not None else lr_l2[0]
    l2 = args.l2 if args.l2 is not None else lr_l2[1]
    changes = {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads}
    return dataclasses.replace(
        base,
        **{k: v for k, v in changes.items() if v is not None},
        lr_emb=lr, lr_nn=lr, l2_emb=l2, l2_nn=l2,
        device=args.device, amp=args.amp, shuffle=not args.no_shuffle,
        progress=not args.no_progress,
    )


def run_search(args: argparse.Namespace) -> int:
    import dataclasses

    from .data.dataset import PreparedData
    from .distributed import init_from_env, is_main_process
    from .io import SEARCH_RUN, claim_output_folder
    from .models.supernet import SupernetConfig
    from .presets import check_preset_fits, default_preset_name, get_search_preset
    from .search import SearchConfig, stability_summary, write_stability
    from .train import TrainConfig, resolve_device

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
    )
    base = TrainConfig(batch_size=preset.batch_size, epochs=preset.epochs, seed=args.seed)
    train_cfg = _train_config(base, args, (preset.lr, preset.l2))
    search_cfg = SearchConfig(
        arch_lr=args.arch_lr if args.arch_lr is not None else preset.arch_lr,
        history_every=args.history_every,
        design=args.design,
        algorithm=args.algorithm,
    )
    resolve_device(train_cfg.device)
    init_from_env()  # under torchrun: join the process group (one process per GPU)
    metadata = {"preset": name, "arguments": _plain_arguments(args)}
    if not args.seeds:
        return _search_one(args, args.out, data, supernet_cfg, train_cfg, search_cfg, metadata)[0]
    claim_output_folder(args.out, SEARCH_RUN)  # the seeds' runs and the stability summary
    genotypes = []
    for seed in args.seeds:
        seed_cfg = dataclasses.replace(train_cfg, seed=seed)
        code, genotype = _search_one(args, args.out / f"seed_{seed}", data, supernet_cfg,
                                     seed_cfg, search_cfg, metadata)
        if code != 0:
            return code
        genotypes.append(genotype)
    if is_main_process():
        stability = stability_summary(genotypes, list(args.seeds))
        write_stability(args.out, stability)
        print(f"stability over seeds {list(args.seeds)} -> {args.out}/stability.json")
        print(stability["edges"].to_string(index=False, max_rows=60))
    return 0


def _search_one(args, out: Path, data, supernet_cfg, train_cfg, search_cfg, metadata):
    """One search into ``out`` (with checkpoints and --resume); (exit code, genotype)."""
    from .distributed import is_main_process
    from .models.genotype import Genotype
    from .search import search, search_fingerprint, write_search_run
    from .train import TrainingDivergedError

    fingerprint = search_fingerprint(data, supernet_cfg, train_cfg, search_cfg)
    if args.resume and (out / "result.json").is_file():
        config = json.loads((out / "config.json").read_text())
        if config.get("fingerprint") != fingerprint:
            raise ValueError(f"{out}: this finished search used other data or options; "
                             "drop --resume or choose another --out")
        if is_main_process():
            print(f"{out}: the search finished already; nothing to resume")
        return 0, Genotype.load(out / "genotype.json")
    try:
        result = search(data, supernet_cfg, train_cfg, search_cfg, checkpoint_dir=out,
                        resume=args.resume, fingerprint=fingerprint, live_dir=out)
    except TrainingDivergedError as exc:
        print(f"optfusion-lab search: error: {exc}", file=sys.stderr)
        return 1, None
    if result.stopped:
        print(f"optfusion-lab search: stopped ({result.stop_reason}); the checkpoint in {out} "
              "keeps every finished epoch: continue with --resume", file=sys.stderr)
        return 130, None
    if not is_main_process():
        return 0, result.genotype
    if args.truth is not None:
        from .models.teacher import score_genotype

        metadata = {**metadata, "score_against_truth": score_genotype(
            result.genotype, Genotype.load(args.truth)).to_dict()}
    write_search_run(out, result, data, supernet_cfg, train_cfg, search_cfg, metadata)
    fit = result.fit
    print(result.genotype)
    if args.truth is not None:
        score = metadata["score_against_truth"]
        print("against the truth: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
    resumed = ""
    if fit.resumed_from_epoch is not None:
        resumed = f", resumed after epoch {fit.resumed_from_epoch}"
    print(f"supernet ({search_cfg.algorithm}{resumed}): best valid AUC "
          f"{fit.best_valid_auc:.5f} (epoch {fit.best_epoch}), test AUC {fit.test_auc:.5f}, "
          f"LogLoss {fit.test_logloss:.5f}, {result.search_seconds:.1f} s -> {out}/")
    return 0, result.genotype


def _search_config_near(genotype_path: Path, warm_start: Path | None) -> dict | None:
    for directory in (warm_start, genotype_path.parent):
        if directory is not None and (directory / "config.json").is_file():
            return json.loads((directory / "config.json").read_text())
    return None


def run_retrain(args: argparse.Namespace) -> int:
    from .data.dataset import PreparedData
    from .distributed import init_from_env, is_main_process
    from .models.genotype import Genotype
    from .presets import default_preset_name, get_search_preset
    from .search import load_warm_start, retrain
    from .train import TrainConfig, TrainingDivergedError, resolve_device

    data = PreparedData.open(args.data)
    genotype = Genotype.load(args.genotype)
    if genotype.num_fields != data.num_fields:
        raise ValueError(f"{args.genotype} was searched on data with {genotype.num_fields} "
                         f"fields; {args.data} has {data.num_fields}")
    config = _search_config_near(args.genotype, args.warm_start)
    metadata = {"arguments": _plain_arguments(args)}
    if config is not None:  # the search's training settings, e.g. batch size and epochs
        base, preset_name = TrainConfig(**config["train"]), config.get("preset")
        metadata["search_config"] = config
    else:
        base, preset_name = TrainConfig(), None
    preset_name = preset_name or default_preset_name(data.meta)
    preset = get_search_preset(preset_name)
    lr_l2 = preset.retrain_hard if args.selection == "hard" else preset.retrain_soft
    train_cfg = _train_config(base, args, lr_l2)
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
