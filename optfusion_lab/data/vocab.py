"""Per-field vocabularies: token -> id, with id 0 reserved for out-of-vocabulary tokens.

Counting is streamed: every parsed batch dictionary-encodes each field (in C++, via pyarrow) and
hands its small dictionary and per-entry counts to a :class:`TokenCounter`. Once the file is read,
the counter merges the batch dictionaries, applies the threshold and returns, for every batch, a
lookup table from that batch's dictionary codes to final ids. The file is parsed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..io import write_atomic

OOV_ID = 0  # every field's id for a token below the threshold or never seen


def encode_tokens(tokens: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Batch-local codes (int32) and dictionary of one field's tokens; null is its own entry.

    Small-range integer tokens (the Criteo integer fields) take a numpy fast path; everything
    else is hashed by pyarrow's dictionary encoder.
    """
    if pa.types.is_integer(tokens.type) and len(tokens) and tokens.null_count < len(tokens):
        values = tokens.to_numpy(zero_copy_only=False)  # float with NaN when nulls exist
        present = ~np.isnan(values) if tokens.null_count else np.ones(len(values), bool)
        low, high = int(np.min(values[present])), int(np.max(values[present]))
        if high - low < 4 * len(tokens):
            codes = np.zeros(len(values), np.int32)  # code 0 = missing
            codes[present] = (values[present] - low + 1).astype(np.int32)
            return codes, _range_dictionary(low, high)
    encoded = pc.dictionary_encode(tokens, null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False), (
        encoded.dictionary
    )


def _range_dictionary(low: int, high: int) -> pa.Array:
    """The dictionary of the small-integer codes: null (code 0), then low .. high."""
    entries = pa.array(np.arange(low - 1, high + 1, dtype=np.int64))
    return pc.if_else(pa.array(np.arange(len(entries)) > 0), entries, None)


_EXACT = 1 << 53  # integers of smaller magnitude are exact in float64


# Tokens of TOKEN_BYTES bytes (the fast parse reads Criteo's categorical values, 32-bit hashes
# in 8 hex digits, as fixed_size_binary columns of that width) are hashed as the uint64 word
# their bytes make: equal bytes, equal words, so the codes and the order of first appearance
# are the strings' own.
TOKEN_BYTES = 8  # the bytes of one uint64 word


def token_words(tokens: pa.Array) -> pa.Array:
    """The fixed_size_binary(TOKEN_BYTES) ``tokens`` as uint64 words (the same buffers, no copy)."""
    return pa.Array.from_buffers(pa.uint64(), len(tokens), tokens.buffers()[:2],
                                 null_count=tokens.null_count, offset=tokens.offset)


def word_tokens(words: pa.Array) -> pa.Array:
    """The inverse of :func:`token_words`."""
    return pa.Array.from_buffers(pa.binary(TOKEN_BYTES), len(words), words.buffers()[:2],
                                 null_count=words.null_count, offset=words.offset)


def encode_token_bytes(tokens: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """:func:`encode_tokens` of fixed_size_binary(TOKEN_BYTES) tokens: the codes the strings
    would get, and the dictionary as fixed_size_binary(TOKEN_BYTES). Raises ``pa.ArrowInvalid``
    where a token is not UTF-8 (the string parse rejects it)."""
    array = tokens.combine_chunks()
    if len(array) == 0:
        return np.zeros(0, np.int32), pa.array([], pa.binary(TOKEN_BYTES))
    encoded = pc.dictionary_encode(token_words(array), null_encoding="encode")
    dictionary = word_tokens(encoded.dictionary)
    pc.cast(dictionary, pa.string())  # the UTF-8 check of the string parse, on distinct tokens
    return encoded.indices.to_numpy(), dictionary


def _hashed(dictionaries: list[pa.Array]) -> tuple[pa.Array, bool]:
    """The batch dictionaries of a field concatenated for hashing: as uint64 words when they
    are all 8-byte tokens (True), else as strings (8-byte tokens cast)."""
    if dictionaries and all(pa.types.is_fixed_size_binary(d.type) for d in dictionaries):
        return token_words(pa.concat_arrays(dictionaries)), True
    return pa.concat_arrays([_as_strings(d) for d in dictionaries]), False


def _as_strings(dictionary: pa.Array) -> pa.Array:
    """A batch dictionary as strings (8-byte tokens cast; strings and integers as they are)."""
    if pa.types.is_fixed_size_binary(dictionary.type):
        return pc.cast(dictionary, pa.string())
    return dictionary


def encode_integer_tokens(tokens: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray,
                                                                               pa.Array]:
    """:func:`encode_tokens` of the int64 ``tokens`` (null where ``valid`` is False), without
    building the arrow array in the common case: the same codes and dictionary."""
    n = len(tokens)
    if n and (valid is None or valid.any()):
        present = tokens if valid is None else tokens[valid]
        low, high = int(present.min()), int(present.max())
        if high - low < 4 * n and -_EXACT < low and high < _EXACT:
            codes = (tokens - (low - 1)).astype(np.int32)
            if valid is not None:
                codes[~valid] = 0  # code 0 = missing
            return codes, _range_dictionary(low, high)
    return encode_tokens(pa.array(tokens, mask=None if valid is None else ~valid))


class TokenCounter:
    """Collects the dictionaries and counts of one field over the batches of a file."""

    def __init__(self):
        self._dictionaries: list[pa.Array] = []
        self._counts: list[np.ndarray] = []

    def add(self, dictionary: pa.Array, codes: np.ndarray) -> None:
        self._dictionaries.append(dictionary)
        self._counts.append(np.bincount(codes, minlength=len(dictionary)))

    def build(self, threshold: int | None) -> tuple[pa.Array, np.ndarray, list[np.ndarray]]:
        """Merge the batches; keep tokens seen at least ``threshold`` times (all if None).

        Returns the kept tokens (id = position + 1, in the order the batch dictionaries list
        them: first appearance, or value order for small integer fields), their counts, and per
        batch the lookup table from batch codes to field ids. Ids are deterministic for a file
        and a block size (``reader.BLOCK_SIZE``).
        """
        hashed, words = _hashed(self._dictionaries)
        merged = pc.dictionary_encode(hashed, null_encoding="encode")
        unique = merged.dictionary
        position = merged.indices.to_numpy(zero_copy_only=False)  # batch entry -> unique index
        counts = np.bincount(
            position, weights=np.concatenate(self._counts), minlength=len(unique)
        ).astype(np.int64)
        # Entries of a batch dictionary may be unseen (count 0): they are never kept.
        keep = counts >= (1 if threshold is None else threshold)
        ids = np.zeros(len(unique), np.int32)
        ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        tables, start = [], 0
        for dictionary in self._dictionaries:
            tables.append(ids[position[start : start + len(dictionary)]])
            start += len(dictionary)
        kept = unique.filter(pa.array(keep))
        return (_as_strings(word_tokens(kept)) if words else kept), counts[keep], tables

    def lookup(self, tokens: pa.Array) -> list[np.ndarray]:
        """Per batch, the lookup table from batch codes to the ids of an existing vocabulary."""
        tables = []
        for dictionary in self._dictionaries:
            index = pc.index_in(_as_strings(dictionary), value_set=tokens, skip_nulls=False)
            tables.append(pc.fill_null(pc.add(index, 1), OOV_ID).to_numpy().astype(np.int32))
        return tables


@dataclass
class Vocabulary:
    """The kept tokens of every field; field ``f``'s token ``tokens[f][k]`` has id ``k + 1``."""

    field_names: tuple[str, ...]
    tokens: list[pa.Array]
    counts: list[np.ndarray]

    @property
    def cardinalities(self) -> list[int]:
        return [len(t) + 1 for t in self.tokens]  # + 1 for the out-of-vocabulary id

    def save(self, path: Path) -> None:
        """Write the vocabulary as one parquet table (field, token, count), atomically."""
        sizes = [len(t) for t in self.tokens]
        table = pa.table(
            {
                "field": pa.array(np.repeat(np.arange(len(sizes), dtype=np.int16), sizes)),
                "token": pa.concat_arrays([pc.cast(t, pa.string()) for t in self.tokens]),
                "count": pa.array(np.concatenate(self.counts).astype(np.int64)),
            }
        )
        write_atomic(path, lambda p: pq.write_table(table, p))

    @classmethod
    def load(cls, path: Path, field_names: tuple[str, ...], numeric_fields=()) -> Vocabulary:
        table = pq.read_table(path)
        field = table.column("field").to_numpy()
        tokens, counts = [], []
        for f, name in enumerate(field_names):
            rows = pa.array(field == f)
            t = table.column("token").filter(rows).combine_chunks()
            tokens.append(pc.cast(t, pa.int64()) if name in numeric_fields else t)
            counts.append(table.column("count").filter(rows).to_numpy())
        return cls(tuple(field_names), tokens, counts)
