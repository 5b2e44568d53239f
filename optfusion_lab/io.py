"""Every file the project writes: one atomic writer, scratch space, and the output guard.

Three rules, for every command and library function that writes:

1. A file is written through a scratch file beside it and renamed into place
   (:func:`write_atomic`), so a reader never sees half a file and a failed write leaves the
   old file as it was.
2. Scratch files and folders never outlive a run, failed or not: they are removed when the
   write ends (an exception included), and the leftovers of a killed process are removed by
   the next run that writes to the same path.
3. An output replaces only an earlier output of its own kind. Output folders carry a marker
   file (:data:`MARKER`) that names their kind (:data:`OUTPUT_KINDS`); output files are
   recognised by their own content. Anything else at the path is an :class:`OutputError` that
   names it, and nothing is moved or removed. An empty folder may be used.

This module does not import torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from . import __version__

MARKER = ".optfusion-lab-output.json"  # the file that names an output folder's kind

PREPARED_DATA = "prepared-data"  # optfusion-lab prepare: meta.json, vocab.parquet, X_/y_ arrays
TRAINING_RUN = "training-run"  # optfusion-lab train and retrain: model.pt, result.json, ...
SEARCH_RUN = "search-run"  # optfusion-lab search: genotype.json, supernet.pt, result.json, ...
COURSE_RUN = "course-run"  # optfusion-lab course: executed notebooks, HTML pages, index.html
SWEEP_RUN = "sweep-run"  # optfusion-lab sweep: an executed notebook per grid point, results.csv
OUTPUT_KINDS = (PREPARED_DATA, TRAINING_RUN, SEARCH_RUN, COURSE_RUN, SWEEP_RUN)

_SCRATCH = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")  # see scratch_path


class OutputError(ValueError):
    """An output path holds something this project may not replace (or cannot write to)."""


# ---------------------------------------------------------------- the atomic writer


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` with ``write(scratch)``, then rename the scratch file onto ``path``.

    The scratch file lives in the same folder (a rename there is atomic) and is removed when
    ``write`` fails. Under torch.distributed only rank 0 writes; the other ranks skip every file.
    Return ``path``.
    """
    path = Path(path)
    if not _is_main_process():
        return path
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give the path of a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(path)
    tmp = scratch_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda p: p.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda p: p.write_text(text))


def write_json(path: str | Path, document: Mapping) -> Path:
    """Write ``document`` as indented, strict JSON, atomically.

    JSON has no NaN or infinity: a non-finite float (e.g. the mean over zero finished seeds)
    is written as ``null``, so every file parses with any JSON reader.
    """
    text = json.dumps(_finite_or_null(document), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


def _finite_or_null(value):
    """``value`` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def write_csv(path: str | Path, frame) -> Path:
    """Write a pandas DataFrame as CSV without its index, atomically."""
    return write_atomic(path, lambda p: frame.to_csv(p, index=False))


# ---------------------------------------------------------------- scratch space


def scratch_path(path: Path, role: str = "tmp") -> Path:
    """The scratch name of ``path`` for this process: ``.<name>.<role>-<pid>`` beside it."""
    return path.with_name(f".{path.name}.{role}-{os.getpid()}")


def remove_stale_scratch(path: Path) -> None:
    """Remove the scratch files and folders of ``path`` left by processes that no longer run."""
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = _SCRATCH.match(sibling.name)
        if match is None or match["name"] != path.name or _process_alive(int(match["pid"])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


@contextmanager
def scratch_dir(beside: str | Path) -> Iterator[Path]:
    """A fresh scratch folder next to ``beside`` (same file system), removed at exit, always."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(beside)
    tmp = scratch_path(beside)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the output guard


def output_kind(path: str | Path) -> str | None:
    """The kind named by the marker of the folder ``path``; None when it has no valid marker."""
    try:
        document = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    kind = document.get("kind") if isinstance(document, dict) else None
    return kind if kind in OUTPUT_KINDS else None


def check_output_folder(path: str | Path, kind: str) -> Path:
    """Raise :class:`OutputError` unless ``path`` may receive an output folder of ``kind``.

    Allowed: nothing at ``path``, an empty folder, or a folder whose marker names ``kind``.
    """
    path = Path(path)
    _check_kind(kind)
    if not os.path.lexists(path):
        return path
    what = kind.replace("-", " ")  # e.g. "training run"
    if path.is_symlink():
        raise OutputError(
            f"{path} is a link; it was kept (give the path of a real folder for the {what})"
        )
    if not path.is_dir():
        raise OutputError(
            f"{path} is a file, not a folder; it was kept (choose another path for the {what})"
        )
    found = output_kind(path)
    if found == kind:
        return path
    if found is not None:
        raise OutputError(
            f"{path} holds an optfusion-lab {found.replace('-', ' ')}, not a {what}; it was kept "
            "(choose another path)"
        )
    entries = sorted(entry.name for entry in path.iterdir())
    if entries:
        more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        shown = ", ".join(entries[:3]) + more
        raise OutputError(
            f"{path} holds files optfusion-lab did not write ({shown}); they were kept "
            f"(choose another path for the {what}, or an empty folder)"
        )
    return path


def claim_output_folder(path: str | Path, kind: str) -> Path:
    """Check ``path`` (:func:`check_output_folder`), create it and mark it as a ``kind``.

    Call it before writing anything into an output folder; claiming a folder again is harmless.
    Under torch.distributed only rank 0 checks and marks.
    """
    path = Path(path)
    if not _is_main_process():
        return path
    check_output_folder(path, kind)
    path.mkdir(parents=True, exist_ok=True)
    if output_kind(path) != kind:
        mark_output_folder(path, kind)
    return path


def mark_output_folder(path: str | Path, kind: str) -> None:
    """Write the marker naming ``path`` an output folder of ``kind``."""
    _check_kind(kind)
    write_json(Path(path) / MARKER, {"kind": kind, "library_version": __version__})


def replace_output_folder(new: Path, out: Path, kind: str) -> None:
    """Move the finished folder ``new`` (marked as ``kind``) to ``out``.

    An earlier output of ``kind`` at ``out`` is removed once ``new`` is in place; anything else
    there is an :class:`OutputError` (checked again here: the folder may have changed during a
    long run) and is left untouched.
    """
    check_output_folder(out, kind)
    if output_kind(new) != kind:
        raise ValueError(f"{new} is not marked as a {kind}")
    old = None
    if out.is_dir() and any(out.iterdir()):  # an earlier output of this kind
        old = scratch_path(out, "old")
        os.replace(out, old)
    try:
        os.replace(new, out)  # onto nothing, or onto an empty folder
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_file(path: str | Path, kind: str, is_own: Callable[[Path], bool]) -> Path:
    """Raise :class:`OutputError` unless ``path`` may receive an output file of ``kind``.

    Allowed: nothing at ``path``, or a file that ``is_own`` recognises as an earlier ``kind``.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return path
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder; give the path of a file for the {kind} "
            f"(e.g. {path / 'predictions.csv'})"
        )
    if path.is_symlink() or not path.is_file() or not is_own(path):
        raise OutputError(
            f"{path} exists and is not an earlier {kind} of optfusion-lab; it was kept "
            "(choose another path)"
        )
    return path


# ---------------------------------------------------------------- helpers


def _check_kind(kind: str) -> None:
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; known kinds: {', '.join(OUTPUT_KINDS)}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True


def _is_main_process() -> bool:
    """False on the non-zero ranks of torch.distributed, True everywhere else.

    torch is not imported here: a process that has not imported torch.distributed has no
    process group.
    """
    if "torch.distributed" not in sys.modules:
        return True
    from .distributed import is_main_process

    return is_main_process()
