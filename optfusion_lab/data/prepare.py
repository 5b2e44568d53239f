"""Streaming preprocessing: raw file -> encoded, split, memory-mappable arrays.

One parse of the raw file (pyarrow), vectorised transforms and encoding, no per-row Python:

1. each parsed batch is validated and transformed (:mod:`.transforms`); every field is
   dictionary-encoded and its batch-local codes are spilled to a scratch file, while the
   :class:`~.vocab.TokenCounter` of the field keeps the small batch dictionary and its counts;
2. the counters are merged into vocabularies (threshold -> out-of-vocabulary id 0 per field),
   or an existing vocabulary is looked up (``vocab_from``);
3. the scratch codes are mapped to global ids (field id + field offset) and written per split.

A Criteo file first takes a fast pass (``_parse(..., fast=True)``): blocks cut where the
streaming reader cuts its batches (:func:`~.reader.iter_fast_batches`), the integer fields
parsed by pyarrow as int64 and tokenised through a table, no per-row checks. At anything the
validating pass would report it raises :class:`~.reader.FastPathUnavailable` and the file is
read again by the validating pass; both give the same bytes (tests/test_prepare_fast.py).

Reference behaviour kept on purpose (DESIGN.md section 4): counts are taken over the whole file
before the split (a mild leak of valid/test frequencies into the vocabulary); the split is a
seeded permutation with exactly floor(0.8 n) train and floor(0.1 n) valid rows, the rest test.
Rows keep their file order inside each split, which is the reference's (unshuffled) order.

The output is written to a scratch directory beside ``out`` and renamed into place only when
complete, so an interrupted run never leaves a dataset that a later run would trust. It replaces
only an earlier prepared dataset (recognised by its marker, :mod:`optfusion_lab.io`): a file or a
folder of anything else at ``out`` is an error, and is left as it was.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .. import __version__
from ..io import (
    PREPARED_DATA,
    check_output_folder,
    mark_output_folder,
    replace_output_folder,
    scratch_dir,
    write_json,
)
from .errors import BadLine, BadLineReport, DataFormatError
from .reader import (
    FastPathUnavailable,
    RowLines,
    iter_fast_batches,
    iter_raw_batches,
    sha256_in_background,
    sha256_of,
    sniff_layout,
)
from .schemas import Schema, get_schema
from .transforms import (
    check_binary_label,
    criteo_integer_tokens,
    criteo_integer_tokens_of_ints,
    int64_values,
    parse_numbers,
    raw_columns_needed,
    transform_batch,
)
from .vocab import (
    TokenCounter,
    Vocabulary,
    encode_integer_tokens,
    encode_token_bytes,
    encode_tokens,
)

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1)  # train and valid; test gets the rest
PROGRESS_MIN_BYTES = 32 << 20  # no progress bar for inputs smaller than this
CODES_MEMORY_BUDGET = 1 << 30  # batch-local codes beyond this many bytes go to a scratch file
WORKERS = max(1, pa.cpu_count())  # threads that encode fields (pyarrow's CPU pool size)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``optfusion-lab prepare``; stored in meta.json and compared on reuse."""

    dataset: str  # criteo, avazu or kdd12
    threshold: int = 2  # tokens seen fewer times map to their field's out-of-vocabulary id
    seed: int = 42  # seed of the train/valid/test permutation
    on_bad_lines: Literal["error", "skip"] = "error"  # stop at the first bad line, or drop them
    drop_impression: bool = False  # kdd12 only: drop the Impression field (reference keeps it)

    def __post_init__(self):
        get_schema(self.dataset, drop_impression=self.drop_impression)
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.on_bad_lines not in ("error", "skip"):
            raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {self.on_bad_lines!r}")


def split_sizes(n: int) -> dict[str, int]:
    n_train = int(np.floor(SPLIT_FRACTIONS[0] * n))
    n_valid = int(np.floor(SPLIT_FRACTIONS[1] * n))
    return {"train": n_train, "valid": n_valid, "test": n - n_train - n_valid}


def split_assignment(n: int, seed: int) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of every row, from a seeded permutation."""
    sizes = split_sizes(n)
    permutation = np.random.default_rng(seed).permutation(n)
    assignment = np.empty(n, np.int8)
    assignment[permutation[: sizes["train"]]] = 0
    assignment[permutation[sizes["train"] : sizes["train"] + sizes["valid"]]] = 1
    assignment[permutation[sizes["train"] + sizes["valid"] :]] = 2
    return assignment


def _raise_or_record(
    path: Path, bad: list[BadLine], on_bad_lines: str, report: BadLineReport
) -> None:
    if not bad:
        return
    if on_bad_lines == "error":
        first = min(bad, key=lambda b: b.line)
        raise DataFormatError(path, first.detail, line=first.line, column=first.column,
                              kind=first.kind)
    for b in sorted(bad, key=lambda b: b.line):
        report.add(b)


_EXPECTED = {
    "bad_label": "label must be 0 or 1 (a click count for kdd12)",
    "non_numeric": "an integer field needs a number",
    "bad_hour": "hour must be YYMMDDHH",
}


def _describe(kind: str, values: list, i: int) -> str:
    """What is wrong with the ``i``-th rejected row (the raw value is kept for the first few)."""
    expected = _EXPECTED.get(kind, "invalid value")
    if i >= len(values):
        return expected
    return f"{expected}, found {'an empty value' if values[i] is None else repr(values[i])}"


class CodeStore:
    """Batch-local codes (F, rows) of the parsed batches, in memory up to a budget, then spilled.

    Memory stays bounded on full-size datasets while small and medium inputs skip the disk.
    """

    def __init__(self, scratch: Path, width: int, memory_budget: int | None = None):
        self.scratch = scratch
        self.width = width  # number of fields
        self.memory_budget = CODES_MEMORY_BUDGET if memory_budget is None else memory_budget
        self.blocks: list[np.ndarray] = []
        self.rows: list[int] = []
        self._file = None

    def append(self, block: np.ndarray) -> None:
        self.rows.append(block.shape[1])
        if self._file is None and sum(b.nbytes for b in self.blocks) + block.nbytes > (
            self.memory_budget
        ):
            self._file = open(self.scratch, "wb")
            for b in self.blocks:
                self._file.write(b.tobytes())
            self.blocks = []
        if self._file is None:
            self.blocks.append(block)
        else:
            self._file.write(block.tobytes())

    def __iter__(self):
        if self._file is None:
            yield from self.blocks
            return
        self._file.close()
        with open(self.scratch, "rb") as f:
            for rows in self.rows:
                yield np.fromfile(f, np.int32, rows * self.width).reshape(self.width, rows)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self.scratch.unlink(missing_ok=True)


def _encode_field(column: pa.ChunkedArray, numeric: bool) -> tuple[np.ndarray, pa.Array]:
    """Batch-local codes and dictionary of one field as the fast parse hands it over, the same
    as the validating pass gives (:func:`transform_batch`, then :func:`encode_tokens`)."""
    if pa.types.is_fixed_size_binary(column.type):
        try:
            return encode_token_bytes(column)
        except pa.ArrowInvalid as exc:
            raise FastPathUnavailable(f"a categorical value that is not UTF-8: {exc}") from exc
    if not numeric:
        encoded = pc.dictionary_encode(column, null_encoding="encode")  # one shared dictionary
        if encoded.num_chunks == 0:
            return np.zeros(0, np.int32), pa.array([], column.type)
        codes = [c.indices.to_numpy() for c in encoded.chunks]
        return np.concatenate(codes) if len(codes) > 1 else codes[0], encoded.chunk(0).dictionary
    if pa.types.is_int64(column.type):
        parts = [int64_values(chunk) for chunk in column.chunks]
        values = np.concatenate([v for v, _ in parts])
        valid = None
        if any(m is not None for _, m in parts):
            valid = np.concatenate([np.ones(len(v), bool) if m is None else m for v, m in parts])
        return encode_integer_tokens(criteo_integer_tokens_of_ints(values, valid), valid)
    values, bad = parse_numbers(column.combine_chunks(), "")
    if bad is not None:
        raise FastPathUnavailable("a value that is not a number")
    return encode_tokens(criteo_integer_tokens(values))


def _parse(path: Path, schema: Schema, layout, cfg: PrepareConfig, store: CodeStore, report,
           *, fast: bool = False):
    """Pass over the file: validate, transform, dictionary-encode, keep batch-local codes.

    ``fast`` (Criteo): pyarrow parses the integer fields itself and any row the validating
    pass would look at twice (a bad width, a value the integer parser or the label check
    rejects) raises :class:`FastPathUnavailable`; tokens and ids are the same either way.
    """
    counters = [TokenCounter() for _ in schema.fields]
    labels: list[np.ndarray] = []
    lines = RowLines(layout.header_lines)
    size = path.stat().st_size
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"prepare {path.name}",
               disable=size < PROGRESS_MIN_BYTES, leave=False)
    columns = raw_columns_needed(schema, layout)
    numeric = [name in schema.numeric_fields for name in schema.fields]

    def encode(j: int, column: pa.Array, block: np.ndarray) -> None:
        codes, dictionary = _encode_field(column, numeric[j]) if fast else encode_tokens(column)
        block[j] = codes
        counters[j].add(dictionary, codes)

    with bar, ThreadPoolExecutor(WORKERS, thread_name_prefix="encode") as encoder:
        on_progress = lambda position: bar.update(position - bar.n)  # noqa: E731
        if fast:
            categorical = tuple(n for n in schema.fields if n not in schema.numeric_fields)
            batches = iter_fast_batches(path, layout, columns, tuple(schema.numeric_fields),
                                        on_progress, token_columns=categorical)
        else:
            batches = iter_raw_batches(path, layout, columns, on_progress)
        for raw in batches:
            if fast:
                fields = [raw.table.column(name) for name in schema.fields]
                batch_labels = None
                if layout.labelled:
                    batch_labels, bad = check_binary_label(
                        raw.table.column(schema.label_column).combine_chunks(),
                        schema.label_column)
                    if bad is not None:
                        raise FastPathUnavailable(f"a bad label in rows after {raw.first_row}")
            else:
                fields, batch_labels = _validated_fields(path, raw, schema, layout, cfg, lines,
                                                         report)
            n = len(fields[0]) if fields else 0
            if n == 0:
                continue
            block = np.empty((len(fields), n), np.int32)  # (F, n) batch-local codes
            # pyarrow and numpy release the GIL: the fields encode in parallel
            list(encoder.map(encode, range(len(fields)), fields, [block] * len(fields)))
            store.append(block)
            if batch_labels is not None:
                labels.append(batch_labels)
    return counters, (np.concatenate(labels) if labels else None)


def _validated_fields(path: Path, raw, schema: Schema, layout, cfg: PrepareConfig,
                      lines: RowLines, report: BadLineReport):
    """The validating pass over one batch: its field tokens and labels, bad rows reported."""
    lines.dropped.extend(b.line for b in raw.bad_rows)
    out, rejected = transform_batch(raw.table, schema, layout)
    bad = list(raw.bad_rows)
    for r in rejected:
        rows = r.rows if cfg.on_bad_lines == "skip" else r.rows[:1]
        for i, row in enumerate(rows):
            line = lines.line_of(raw.first_row + int(row))
            bad.append(BadLine(line, r.kind, r.column, _describe(r.kind, r.values, i)))
    _raise_or_record(path, bad, cfg.on_bad_lines, report)
    return out.fields, out.labels


def _write_splits(
    tmp: Path,
    store: CodeStore,
    tables: list[list[np.ndarray]],
    offsets: np.ndarray,
    labels: np.ndarray | None,
    assignment: np.ndarray | None,
    split_names: tuple[str, ...],
) -> dict[str, dict[str, int]]:
    """Map scratch codes to global ids and write X_<split>.npy / y_<split>.npy.

    Every batch writes its rows of each split to their own place in the split files (known
    from the assignment), so batches are written on parallel threads (numpy's gathers and
    copies release the GIL), a bounded number at a time.
    """
    n, num_fields = sum(store.rows), len(offsets)
    if assignment is None:
        assignment = np.zeros(n, np.int8)
    counts = np.bincount(assignment, minlength=len(split_names))
    xs = [
        np.lib.format.open_memmap(tmp / f"X_{s}.npy", "w+", np.int32, (int(counts[k]), num_fields))
        for k, s in enumerate(split_names)
    ]
    starts = np.concatenate([[0], np.cumsum(store.rows)])
    per_batch = np.array(  # (batches, splits) rows of each split in each batch
        [np.bincount(assignment[a:b], minlength=len(split_names))
         for a, b in zip(starts[:-1], starts[1:], strict=True)]
    ).reshape(len(store.rows), len(split_names))
    cursors = np.cumsum(per_batch, axis=0) - per_batch  # where each batch writes in each split

    def write(b: int, codes: np.ndarray) -> None:
        ids = np.empty_like(codes)  # (F, rows) global ids
        for j in range(num_fields):
            lookup = (tables[j][b] + offsets[j]).astype(np.int32)
            np.take(lookup, codes[j], out=ids[j])
        # rows grouped by split, in file order within each split
        order = np.argsort(assignment[starts[b] : starts[b + 1]], kind="stable")
        at = 0
        for k, x in enumerate(xs):
            rows = int(per_batch[b, k])
            x[cursors[b, k] : cursors[b, k] + rows] = ids[:, order[at : at + rows]].T
            at += rows

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="write") as pool:
        pending = []
        for b, codes in enumerate(store):
            pending.append(pool.submit(write, b, codes))
            if len(pending) > 2 * WORKERS:  # bounds the spilled blocks read ahead
                pending.pop(0).result()
        for future in pending:
            future.result()
    for x in xs:
        x.flush()
    xs.clear()  # closes the memory maps
    num_positive = {}
    for k, s in enumerate(split_names):
        if labels is not None:
            y = labels[assignment == k].astype(np.float32)
            np.save(tmp / f"y_{s}.npy", y)
            num_positive[s] = int(y.sum())
    return {
        "num_rows": {s: int(counts[k]) for k, s in enumerate(split_names)},
        "num_positive": num_positive,
    }


def _existing_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _complete(out: Path, meta: dict) -> bool:
    names = [f"X_{s}.npy" for s in meta["splits"]] + ["vocab.parquet"]
    if meta.get("labelled"):
        names += [f"y_{s}.npy" for s in meta["splits"]]
    return all((out / name).is_file() for name in names)


def prepare(
    input_path: str | Path,
    out: str | Path,
    cfg: PrepareConfig,
    *,
    vocab_from: str | Path | None = None,
) -> dict:
    """Prepare ``input_path`` into the dataset directory ``out``; return its meta.json content.

    ``meta = prepare("criteo_sample.txt.gz", "runs/data/criteo", PrepareConfig("criteo"))``

    With ``vocab_from`` (a prepared dataset directory), the file is encoded with that dataset's
    vocabulary and written unsplit, in file order, as the single split ``all``; it may be
    unlabelled (e.g. Criteo's test file).
    """
    started = time.perf_counter()
    path, out = Path(input_path), Path(out)
    schema = get_schema(cfg.dataset, drop_impression=cfg.drop_impression)
    base = None
    if vocab_from is not None:
        base = _existing_meta(Path(vocab_from))
        if base is None:
            raise FileNotFoundError(f"--vocab-from {vocab_from}: no prepared dataset there")
        if base["dataset"] != schema.name or tuple(base["field_names"]) != schema.fields:
            raise ValueError(
                f"--vocab-from {vocab_from} holds {base['dataset']} data with fields "
                f"{base['field_names']}, not {schema.name} with {list(schema.fields)}"
            )
    check_output_folder(out, PREPARED_DATA)  # before the work: a user's files are never replaced
    layout = sniff_layout(path, schema, allow_unlabelled=vocab_from is not None)
    options = {**asdict(cfg), "vocab_from": str(Path(vocab_from).resolve()) if base else None}

    previous = _existing_meta(out)
    if (
        previous is not None
        and previous.get("options") == options
        and previous.get("library_version") == __version__
        and _complete(out, previous)
        and previous["source"]["sha256"] == sha256_of(path)
    ):
        return {**previous, "reused": True}

    with scratch_dir(out) as tmp:
        sha256 = sha256_in_background(path)
        report = BadLineReport()
        store = CodeStore(tmp / "codes.scratch", schema.num_fields)
        try:
            counters, labels = _parse(path, schema, layout, cfg, store, report,
                                      fast=schema.name == "criteo")
        except FastPathUnavailable:  # something to report: the validating pass names it
            store.close()
            store = CodeStore(tmp / "codes.scratch", schema.num_fields)
            counters, labels = _parse(path, schema, layout, cfg, store, report)
        n = sum(store.rows)
        if n == 0:
            raise DataFormatError(path, "no data rows", kind="empty_file")

        if base is None:
            thresholds = [None if name in schema.unthresholded_fields else cfg.threshold
                          for name in schema.fields]
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="vocab") as pool:
                built = list(pool.map(TokenCounter.build, counters, thresholds))
            vocab = Vocabulary(schema.fields, [b[0] for b in built], [b[1] for b in built])
            tables = [b[2] for b in built]
            assignment, split_names = split_assignment(n, cfg.seed), SPLITS
        else:
            vocab = Vocabulary.load(
                Path(vocab_from) / "vocab.parquet", schema.fields, schema.numeric_fields
            )
            tables = [c.lookup(t) for c, t in zip(counters, vocab.tokens, strict=True)]
            assignment, split_names = None, ("all",)

        cardinalities = vocab.cardinalities
        offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype(np.int64)
        sizes = _write_splits(tmp, store, tables, offsets, labels, assignment, split_names)
        store.close()
        vocab.save(tmp / "vocab.parquet")
        meta = {
            "format_version": FORMAT_VERSION,
            "dataset": schema.name,
            "field_names": list(schema.fields),
            "num_fields": schema.num_fields,
            "cardinalities": cardinalities,
            "offsets": offsets.tolist(),
            "num_features": int(sum(cardinalities)),
            "splits": list(split_names),
            "labelled": labels is not None,
            **sizes,
            "threshold": cfg.threshold,
            "seed": cfg.seed,
            "options": options,
            "source": {
                "path": str(path.resolve()),
                "sha256": sha256.result(),
                "bytes": path.stat().st_size,
                "layout": {
                    "delimiter": layout.delimiter,
                    "header": layout.has_header,
                    "labelled": layout.labelled,
                },
            },
            "vocab_from": (
                {"path": options["vocab_from"], "source_sha256": base["source"]["sha256"]}
                if base
                else None
            ),
            "bad_lines": report.to_dict(),
            "library_version": __version__,
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(tmp / "meta.json", meta)
        mark_output_folder(tmp, PREPARED_DATA)
        replace_output_folder(tmp, out, PREPARED_DATA)
    return {**meta, "reused": False}
