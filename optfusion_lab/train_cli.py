"""The ``train`` and ``predict`` subcommands of ``optfusion-lab``.

``add_train_parser`` / ``add_predict_parser`` register them on an ``argparse`` subparsers object
(``optfusion_lab.cli`` wires them in); ``run_train`` / ``run_predict`` run them and return an exit
code. Building the parsers imports neither torch nor the models: torch is imported when a command
runs. Errors the user can fix (unknown model or preset, missing data) raise ValueError or
FileNotFoundError, which ``optfusion_lab.cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optfusion_lab.names import DEVICES, EMBEDDING_UPDATES, MODELS
from optfusion_lab.presets import PRESETS, describe_presets

DEFAULT_SEEDS = (0, 1, 2)  # DESIGN.md: report mean +- std over seeds, never a single run


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on ``subparsers`` (the object ``add_subparsers()`` returns)."""
    p = subparsers.add_parser(
        "train",
        help="train a baseline on a prepared dataset, one run per seed",
        description="Train a baseline CTR model on a prepared dataset (train/valid/test splits) "
        "with early stopping on validation AUC, once per seed, and write RUN_DIR/model.pt, "
        "history.csv and result.json (test AUC/LogLoss as mean, std and per seed).",
        epilog=f"models:\n  {', '.join(MODELS)}\n\npresets (default: the data's dataset):\n"
        f"{describe_presets()}\n\n--lr and --l2 set both optimizer groups (embedding and network).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="a dataset prepared by `optfusion-lab prepare`")
    p.add_argument("--model", required=True, metavar="NAME",
                   help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--out", required=True, type=Path, metavar="RUN_DIR",
                   help="run directory to write (created if needed)")
    p.add_argument("--preset", metavar="NAME",
                   help=f"one of: {', '.join(PRESETS)} (default: the data's dataset preset)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help=f"one run per seed (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    p.add_argument("--embed-dim", type=int, metavar="N",
                   help="embedding dim D (preset MLP widths d = F*D follow it)")
    p.add_argument("--cross-layers", type=int, metavar="N")
    p.add_argument("--mlp", type=int, nargs="+", metavar="W", help="MLP widths")
    add_loop_arguments(p)
    p.add_argument("--embedding-l2", choices=("on", "off"),
                   help="coupled L2 on the embedding tables (default: the preset's, on); off "
                        "suits small or sparse data (see the README)")
    p.set_defaults(func=run_train)
    return p


def add_loop_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the training loop shared by train, search and retrain."""
    p.add_argument("--epochs", type=int, metavar="N", help="maximum number of epochs")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--lr", type=float, metavar="X", help="learning rate of both groups")
    p.add_argument("--l2", type=float, metavar="X", help="L2 (Adam weight_decay) of both groups")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks cuda when available (default auto)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for the training steps (off by default; "
                   "the first steps pay the compilation; see the README's Supernet speed)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="keep the stored order every epoch (the reference's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--release-freed-memory", action="store_true",
                   help="CPU: let the C allocator return freed memory to the system (lower peak "
                   "RSS, about 15%% for the supernet; more page faults and slower steps); by "
                   "default it is kept for the next step")
    p.add_argument("--embedding-update", choices=EMBEDDING_UPDATES, metavar="dense|sparse",
                   help="dense: Adam over the whole embedding table every step (the reference, "
                   "default); sparse: only the rows the batch touches (lazy Adam, L2 on those "
                   "rows; not under NCCL), for large vocabularies (see the README)")


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``predict`` on ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="score a raw file with a trained run",
        description="Encode RAW_FILE with the vocabulary of the run's training data (in file "
        "order, labelled or not), score it with the run's best weights, and write a CSV with one "
        "row per input row: `probability`, plus `label` when the file is labelled.",
    )
    p.add_argument("--run", required=True, type=Path, metavar="RUN_DIR",
                   help="a directory written by `optfusion-lab train`")
    p.add_argument("--input", required=True, type=Path, metavar="RAW_FILE")
    p.add_argument("--out", required=True, type=Path, metavar="PREDICTIONS.csv")
    p.add_argument("--seed", type=int, metavar="S",
                   help="use this seed's weights (default: the run's first seed)")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--batch-size", type=int, default=16384, metavar="N")
    p.set_defaults(func=run_predict)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; return the exit code."""
    import dataclasses

    from optfusion_lab.data.dataset import PreparedData
    from optfusion_lab.presets import (
        check_model_name,
        default_preset_name,
        get_preset,
        resolve_preset,
        with_embedding_l2,
        with_sizes,
    )

    model_name = check_model_name(args.model)
    preset = get_preset(args.preset) if args.preset is not None else None
    data = PreparedData.open(args.data)
    preset = preset if preset is not None else get_preset(default_preset_name(data.meta))
    preset = with_sizes(
        preset,
        embed_dim=args.embed_dim,
        mlp_dims=tuple(args.mlp) if args.mlp else None,
        cross_layers=args.cross_layers,
    )
    if args.embedding_l2 is not None:
        preset = with_embedding_l2(preset, args.embedding_l2 == "on")
    model_cfg, train_cfg = resolve_preset(preset, model_name, data.meta)
    changes = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "lr_emb": args.lr,
        "lr_nn": args.lr,
        "l2_emb": args.l2 if preset.embedding_l2 else None,  # off stays off under --l2
        "l2_nn": args.l2,
        "embedding_update": args.embedding_update,
    }
    train_cfg = dataclasses.replace(
        train_cfg,
        **{k: v for k, v in changes.items() if v is not None},
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        keep_freed_memory=not args.release_freed_memory,
        shuffle=not args.no_shuffle,
        progress=not args.no_progress,
    )
    seeds = list(args.seeds) if args.seeds else list(DEFAULT_SEEDS)

    from optfusion_lab.distributed import init_from_env, is_main_process
    from optfusion_lab.train import TrainingDivergedError, resolve_device, run_seeds

    resolve_device(train_cfg.device)  # fail before training when cuda is missing
    init_from_env()  # under torchrun: join the process group (one process per GPU)
    try:
        run = run_seeds(
            model_name,
            model_cfg,
            data,
            train_cfg,
            seeds,
            out_dir=args.out,
            metadata={
                "preset": preset.name,
                "embedding_l2": preset.embedding_l2,
                "arguments": _plain_arguments(args),
            },
        )
    except TrainingDivergedError as exc:
        print(f"optfusion-lab train: error: {exc}", file=sys.stderr)
        return 1
    if is_main_process():
        print(format_train_summary(model_name, data.meta["dataset"], preset.name, run, args.out))
    return 130 if run.stopped else 0


def _plain_arguments(args: argparse.Namespace) -> dict:
    """The command-line arguments as JSON values (for result.json)."""
    values = {k: v for k, v in vars(args).items() if k != "func"}
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def format_train_summary(model: str, dataset: str, preset: str, run, out: Path) -> str:
    """The lines the train and retrain commands print about a :class:`SeedsResult`."""
    summary, seeds = run.summary, run.finished_seeds

    def pm(metric: str, fmt: str) -> str:
        s = summary[metric]
        return f"{s['mean']:{fmt}} +- {s['std']:{fmt}}"

    stopped = []
    if run.stopped:
        stopped = [f"stopped ({run.stop_reason}) in seed {run.seeds[-1]}: the summary covers "
                   f"{len(seeds)} finished seed(s) of {len(run.requested_seeds)}"]
    return "\n".join(
        [
            *stopped,
            f"{model} on {dataset} (preset {preset}), {len(seeds)} seed(s) {seeds}",
            f"  test AUC        {pm('test_auc', '.5f')}",
            f"  test LogLoss    {pm('test_logloss', '.5f')}",
            f"  best valid AUC  {pm('best_valid_auc', '.5f')}",
            f"  epochs run      {pm('epochs_run', '.1f')}",
            f"  train time      {pm('train_seconds', '.2f')} s "
            f"({summary['samples_per_second']['mean']:,.0f} samples/s)",
            f"  -> {out}/ (model.pt, history.csv, result.json)",
        ]
    )


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict`` from parsed arguments; return the exit code."""
    from optfusion_lab.io import check_output_file, write_csv
    from optfusion_lab.predict import predict_file

    out = check_output_file(args.out, "prediction file", _is_prediction_file)
    frame = predict_file(args.run, args.input, seed=args.seed, device=args.device,
                         batch_size=args.batch_size, scratch_beside=out)
    write_csv(out, frame)
    line = f"{len(frame):,} rows scored with {frame.attrs['model']} ({args.run}) -> {out}"
    if "metrics" in frame.attrs:
        metrics = frame.attrs["metrics"]
        line += f" (AUC {metrics['auc']:.5f}, LogLoss {metrics['logloss']:.5f})"
    print(line)
    return 0


PREDICTION_HEADERS = ("probability", "probability,label")  # the first line of a prediction file


def _is_prediction_file(path: Path) -> bool:
    """Whether ``path`` is a prediction file written by ``predict`` (it may be replaced)."""
    with open(path, "rb") as f:
        first = f.readline(64).decode("utf-8", "replace").strip()
    return first in PREDICTION_HEADERS
