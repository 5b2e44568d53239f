"""Per-dataset validation and transforms: raw string columns -> label and field tokens.

Everything here is vectorised over a whole record batch (pyarrow compute and numpy); there is
no per-row Python. A transform returns the rows it rejects instead of raising, so that the caller
decides between ``--on-bad-lines error`` and ``skip``.

Reference behaviour kept on purpose (DESIGN.md section 4):

- Criteo integer fields become ``floor(ln(v)^2)`` for ``v > 2`` and ``trunc(v)`` otherwise, a
  missing value is its own token, and they are never thresholded. This reproduces the reference
  tokens, collisions included: v = 1, 3 and 4 all give token 1, and v = 2 and 5 both give 2.
  Negative values (they occur in the real data) are kept as their own tokens.
- Avazu's ``hour`` (YYMMDDHH) becomes the hour of day, and two fields are derived from its date:
  ``weekday`` (0 = Monday) and ``is_weekend``.
- KDD12's label is ``Click > 0``; IDs stay strings (they exceed the int64 range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .reader import Layout
from .schemas import Schema

_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
_BINARY_LABELS = pa.array(["0", "1", "0.0", "1.0"])
_POSITIVE_LABELS = pa.array(["1", "1.0"])


@dataclass
class Rejected:
    """Rows of one batch rejected by one check."""

    rows: np.ndarray  # row indices within the batch
    kind: str
    column: str | None
    values: list  # the raw values of the first few rows (None = missing)


@dataclass
class Transformed:
    labels: np.ndarray | None  # uint8 (n,), None for an unlabelled file
    fields: list[pa.Array]  # one token array per schema field, rows aligned with labels


def raw_columns_needed(schema: Schema, layout: Layout) -> list[str]:
    """The raw columns a transform reads, in the file's naming."""
    cols = [c for c in schema.raw_columns if c != schema.id_column]
    if not layout.labelled:
        cols.remove(schema.label_column)
    return cols


def _reject(mask: np.ndarray, column: pa.Array, kind: str, name: str) -> Rejected | None:
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        return None
    values = column.take(pa.array(rows[:5])).to_pylist()  # the first few, for messages
    return Rejected(rows, kind, name, values)


def int64_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """The values of an int64 ``column`` (entries under nulls undefined) and which are valid
    (None when none is null), read from its buffers."""
    values = np.frombuffer(column.buffers()[1], np.int64, len(column), column.offset * 8)
    if column.null_count == 0:
        return values, None
    bits = np.frombuffer(column.buffers()[0], np.uint8)
    valid = np.unpackbits(bits, count=column.offset + len(column), bitorder="little")
    return values, valid[column.offset :].view(bool)


def check_binary_label(column: pa.Array, name: str) -> tuple[np.ndarray, Rejected | None]:
    ok = pc.fill_null(pc.is_in(column, value_set=_BINARY_LABELS), False)
    ok = ok.to_numpy(zero_copy_only=False)
    labels = pc.fill_null(pc.is_in(column, value_set=_POSITIVE_LABELS), False)
    return labels.to_numpy(zero_copy_only=False).astype(np.uint8), _reject(
        ~ok, column, "bad_label", name
    )


def check_count_label(column: pa.Array, name: str) -> tuple[np.ndarray, Rejected | None]:
    """A non-negative integer count (KDD12 clicks); the label is ``count > 0``."""
    ok = pc.fill_null(pc.match_substring_regex(column, r"^\d+$"), False)
    ok = ok.to_numpy(zero_copy_only=False)
    zero = pc.fill_null(pc.match_substring_regex(column, r"^0+$"), False)
    labels = ok & ~zero.to_numpy(zero_copy_only=False)
    return labels.astype(np.uint8), _reject(~ok, column, "bad_label", name)


def parse_numbers(column: pa.Array, name: str) -> tuple[np.ndarray, Rejected | None]:
    """Strings -> float64 with NaN for missing; non-numeric values are rejected (NaN)."""
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        finite_or_missing = np.isfinite(values) | pc.is_null(column).to_numpy(zero_copy_only=False)
        if finite_or_missing.all():
            return values, None
    except pa.ArrowInvalid:
        pass
    # Slow path, only for a batch that holds a bad value: find exactly which rows.
    ok = pc.fill_null(pc.match_substring_regex(column, _NUMBER), True)
    ok = ok.to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(ok), column, pa.scalar(None, pa.string()))
    values = pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False)
    return values, _reject(~ok, column, "non_numeric", name)


def criteo_integer_token_values(values: np.ndarray) -> np.ndarray:
    """The reference transform of Criteo integer values (float64) -> int64 tokens."""
    with np.errstate(invalid="ignore"):
        log_squared = np.floor(np.log(np.where(values > 2, values, 3.0)) ** 2)
        tokens = np.where(values > 2, log_squared, np.trunc(np.nan_to_num(values)))
    return tokens.astype(np.int64)


def criteo_integer_tokens(values: np.ndarray) -> pa.Array:
    """The reference transform of a Criteo integer field (see the module docstring)."""
    return pa.array(criteo_integer_token_values(values), mask=np.isnan(values))


_LOOKUP_SIZE = 1 << 16  # integers 0 .. _LOOKUP_SIZE - 1 take their token from a table
_lookup: list[np.ndarray] = []  # filled on first use


def criteo_integer_tokens_of_ints(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """:func:`criteo_integer_token_values` of int64 ``values`` (pyarrow's integer parse).

    The same tokens as the reference's float parse: a decimal integer and its int64 value
    convert to the same (nearest) float64. Entries where ``valid`` is False are don't-cares.
    Small non-negative values, nearly all of them in Criteo, are looked up in a table made by
    the reference transform itself; the rest go through it directly.
    """
    if not _lookup:
        _lookup.append(criteo_integer_token_values(np.arange(_LOOKUP_SIZE, dtype=np.float64)))
    inside = (values >= 0) & (values < _LOOKUP_SIZE)
    tokens = _lookup[0][np.where(inside, values, 0)]
    outside = ~inside if valid is None else ~inside & valid
    if outside.any():
        tokens[outside] = criteo_integer_token_values(values[outside].astype(np.float64))
    return tokens


def avazu_time_fields(column: pa.Array, name: str) -> tuple[list[pa.Array], Rejected | None]:
    """YYMMDDHH -> (hour of day, weekday, is_weekend) as string tokens."""
    ok = pc.fill_null(pc.match_substring_regex(column, r"^\d{8}$"), False)
    ok = ok.to_numpy(zero_copy_only=False)
    safe = pc.if_else(pa.array(ok), column, pa.scalar("14102100"))
    date = pc.binary_join_element_wise("20", pc.utf8_slice_codeunits(safe, 0, 6), "")
    timestamps = pc.strptime(date, format="%Y%m%d", unit="s", error_is_null=True)
    hours = pc.utf8_slice_codeunits(safe, 6, 8)
    ok &= pc.is_valid(timestamps).to_numpy(zero_copy_only=False)
    ok &= pc.fill_null(pc.less(pc.cast(hours, pa.int32()), 24), False).to_numpy(
        zero_copy_only=False
    )
    weekday = pc.day_of_week(pc.fill_null(timestamps, 0))
    is_weekend = pc.greater_equal(weekday, 5)
    fields = [hours, pc.cast(weekday, pa.string()), pc.cast(is_weekend, pa.string())]
    return fields, _reject(~ok, column, "bad_hour", name)


def transform_batch(
    table: pa.RecordBatch, schema: Schema, layout: Layout
) -> tuple[Transformed, list[Rejected]]:
    """Validate and transform one batch. Rejected rows are returned and removed from the output."""
    rejected: list[Rejected] = []
    labels = None
    if layout.labelled:
        column = table.column(schema.label_column)
        check = check_count_label if schema.name == "kdd12" else check_binary_label
        labels, bad = check(column, schema.label_column)
        rejected += [bad] if bad else []

    fields: list[pa.Array] = []
    if schema.name == "criteo":
        for name in schema.fields:
            if name in schema.numeric_fields:
                values, bad = parse_numbers(table.column(name), name)
                rejected += [bad] if bad else []
                fields.append(criteo_integer_tokens(values))
            else:
                fields.append(table.column(name))
    elif schema.name == "avazu":
        time_fields, bad = avazu_time_fields(table.column("hour"), "hour")
        rejected += [bad] if bad else []
        derived = dict(zip(("hour", "weekday", "is_weekend"), time_fields, strict=True))
        fields = [derived[n] if n in derived else table.column(n) for n in schema.fields]
    else:
        fields = [table.column(name) for name in schema.fields]

    if rejected:
        keep = np.ones(table.num_rows, dtype=bool)
        for bad in rejected:
            keep[bad.rows] = False
        mask = pa.array(keep)
        fields = [f.filter(mask) for f in fields]
        labels = labels[keep] if labels is not None else None
    return Transformed(labels, fields), rejected
