"""The ``optfusion-lab`` command line.

Each subcommand imports what it needs when it runs, so that ``prepare`` never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .course_cli import add_course_parser, add_sweep_parser
from .names import DATASETS
from .search_cli import add_retrain_parser, add_search_parser
from .train_cli import add_predict_parser, add_train_parser


def _prepare_parser(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="encode a raw Criteo/Avazu/KDD12 file into a split, memory-mappable dataset",
        description="Encode a raw Criteo/Avazu/KDD12 file (plain or .gz) into DIR: meta.json, "
        "vocab.parquet and X_/y_ arrays per split (8:1:1). With --vocab-from, encode the file "
        "unsplit with an existing dataset's vocabulary (the file may be unlabelled).",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--input", required=True, type=Path, metavar="RAW_FILE")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--threshold", type=int, default=2,
                   help="tokens seen fewer times map to the field's OOV id (default 2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split (default 42)")
    p.add_argument("--on-bad-lines", choices=("error", "skip"), default="error",
                   help="stop at the first bad line (default) or drop bad lines and report them")
    p.add_argument("--vocab-from", type=Path, metavar="DIR",
                   help="encode with the vocabulary of this prepared dataset, without splitting")
    p.add_argument("--drop-impression", action="store_true",
                   help="kdd12 only: drop the Impression field (the reference keeps it)")
    p.set_defaults(func=_run_prepare)


class _WithoutPandas:
    """An import finder for which pandas is not installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError(f"{name} is not used by optfusion-lab prepare", name=name)
        return None


def _run_prepare(args) -> int:
    from .data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(
        dataset=args.dataset,
        threshold=args.threshold,
        seed=args.seed,
        on_bad_lines=args.on_bad_lines,
        drop_impression=args.drop_impression,
    )
    meta = prepare(args.input, args.out, cfg, vocab_from=args.vocab_from)
    print(format_prepare_summary(meta, args.out))
    return 0


def format_prepare_summary(meta: dict, out: Path) -> str:
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta["num_rows"].items())
    state = "reused existing" if meta.get("reused") else f"prepared in {meta['seconds']:.2f} s"
    bad = meta["bad_lines"]
    lines = [
        f"{meta['dataset']}: {state} -> {out}",
        f"  rows      {sum(meta['num_rows'].values()):,} ({sizes})",
        f"  fields    {meta['num_fields']}",
        f"  features  {meta['num_features']:,} (threshold {meta['threshold']}, OOV id per field)",
    ]
    if meta["labelled"]:
        positives = sum(meta["num_positive"].values()) / max(1, sum(meta["num_rows"].values()))
        lines.append(f"  clicks    {positives:.2%}")
    if bad["skipped"]:
        kinds = ", ".join(f"{k} {v}" for k, v in bad["by_kind"].items())
        first = ", ".join(str(e["line"]) for e in bad["examples"])
        lines.append(f"  skipped   {bad['skipped']} bad lines ({kinds}; first at lines {first})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optfusion-lab",
        description="Learned fusion (OptFusion) for deep CTR models: data, training, search "
        "and the notebook course.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _prepare_parser(sub)
    add_train_parser(sub)
    add_predict_parser(sub)
    add_search_parser(sub)
    add_retrain_parser(sub)
    add_course_parser(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Run one command; ``own_process``: the process exits after it (the console script)."""
    args = build_parser().parse_args(argv)
    if own_process and args.command == "prepare" and "pandas" not in sys.modules:
        # pyarrow imports pandas, when it is installed, at its first conversion of a numpy
        # array (0.2-0.5 s here, a tenth of preparing 1M Criteo rows). prepare never uses
        # pandas; in a process that only prepares, pyarrow finds it absent.
        sys.meta_path.insert(0, _WithoutPandas)
    from .data.errors import DataFormatError

    try:
        return args.func(args)
    except (DataFormatError, FileNotFoundError, ValueError) as exc:
        print(f"optfusion-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"optfusion-lab {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``optfusion-lab`` console script and ``python -m optfusion_lab.cli``."""
    sys.exit(main(own_process=True))


if __name__ == "__main__":
    run()
