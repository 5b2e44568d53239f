"""Streaming reader for raw CTR files: layout sniffing, gzip, line numbers, bad rows.

The reader parses with pyarrow's streaming CSV reader (one parse, in C++) and yields record
batches of string columns named by the schema. It never looks at values: validation and
transforms are the job of :mod:`optfusion_lab.data.transforms`. What it adds to pyarrow:

- the layout of the file (delimiter, header or not, labelled or not, column names) is sniffed
  from its first line, so the official layouts and their common variants all read the same way;
- rows with the wrong number of columns are reported with their physical line number;
- every yielded row can be mapped back to its line number in the file.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue

import pyarrow as pa
import pyarrow.csv as pa_csv

from .errors import BadLine, DataFormatError
from .schemas import Schema
from .vocab import TOKEN_BYTES

BLOCK_SIZE = 1 << 24  # bytes per parsed block; about 65k Criteo rows
PARSE_CHUNK = 1 << 20  # the fast parse reads a block in pieces of this size (cache-friendly)


@dataclass(frozen=True)
class Layout:
    """How one raw file is laid out."""

    delimiter: str
    has_header: bool
    labelled: bool
    file_columns: tuple[str, ...]  # a name for every physical column ("_extra<i>" if unknown)

    @property
    def header_lines(self) -> int:
        return int(self.has_header)


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_text_bytes(path: Path):
    """A binary stream of the decompressed content of ``path`` (gzip is detected by magic)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def check_input_file(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, "input file not found", kind="missing_file")
    if not path.is_file():
        raise DataFormatError(path, "input is not a regular file", kind="missing_file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "input file is empty", kind="empty_file")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_in_background(path: Path) -> Future:
    """Hash ``path`` on a worker thread (hashlib releases the GIL) while the parse runs."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    future = pool.submit(sha256_of, path)
    pool.shutdown(wait=False)
    return future


def sniff_layout(path: Path, schema: Schema, *, allow_unlabelled: bool) -> Layout:
    """Read the first line of ``path`` and decide delimiter, header and column names."""
    check_input_file(path)
    with open_text_bytes(path) as f:
        first = f.readline()
    text = first.decode("utf-8", errors="replace").rstrip("\r\n")
    if not text.strip():
        raise DataFormatError(path, "the first line is empty", line=1, kind="empty_file")
    delimiter = "\t" if "\t" in text else ","
    cells = [c.strip().strip('"') for c in text.split(delimiter)]
    known = {c.lower(): c for c in schema.raw_columns}
    matches = sum(c.lower() in known for c in cells)
    has_header = matches * 2 >= len(cells)
    label_lower = schema.label_column.lower()

    if has_header:
        names = []
        for i, cell in enumerate(cells):
            name = known.get(cell.lower())
            names.append(name if name is not None and name not in names else f"_extra{i}")
        required = [c for c in schema.raw_columns if c != schema.id_column]
        missing = [c for c in required if c not in names and c.lower() != label_lower]
        if missing:
            raise DataFormatError(
                path, f"header lacks the {schema.name} columns {missing}", line=1, kind="header"
            )
        labelled = schema.label_column in names
    else:
        official = list(schema.raw_columns)
        unlabelled = [c for c in official if c != schema.label_column]
        if len(cells) == len(official):
            names, labelled = official, True
        elif len(cells) == len(unlabelled):
            names, labelled = unlabelled, False
        else:
            raise DataFormatError(
                path,
                f"expected {len(official)} columns ({len(unlabelled)} for an unlabelled file) "
                f"in the {schema.name} layout, found {len(cells)} separated by {delimiter!r}",
                line=1,
                kind="column_count",
            )
    if not labelled and not allow_unlabelled:
        raise DataFormatError(
            path,
            f"no label column {schema.label_column!r}: an unlabelled file can only be encoded "
            "with an existing vocabulary (--vocab-from)",
            line=1,
            kind="header",
        )
    return Layout(delimiter, has_header, labelled, tuple(names))


class RowLines:
    """Maps the index of a parsed row to its 1-based line number in the file.

    Rows the parser dropped (wrong column count) shift the mapping; their physical line numbers
    are kept in sorted order as the streaming parse reports them.
    """

    def __init__(self, header_lines: int):
        self.header_lines = header_lines
        self.dropped: list[int] = []  # physical line numbers of dropped rows, increasing

    def line_of(self, row_index: int) -> int:
        line = self.header_lines + 1 + row_index
        # Each dropped line at or before the candidate pushes the row one line further down.
        k = 0
        while True:
            shifted = bisect_right(self.dropped, line + k)
            if shifted == k:
                return line + k
            k = shifted


class FastPathUnavailable(Exception):
    """The input holds something the fast parse does not take; the validating parse must run."""


@dataclass
class RawBatch:
    table: pa.RecordBatch  # string columns, named by the schema
    first_row: int  # index of the batch's first row among all parsed rows
    bad_rows: list[BadLine]  # rows of wrong width the parser dropped inside this batch


def iter_raw_batches(
    path: Path,
    layout: Layout,
    columns: list[str],
    on_progress=lambda position: None,
) -> Iterator[RawBatch]:
    """Parse ``path`` block by block, yielding the requested ``columns`` as strings.

    The parse runs on a background thread (pyarrow releases the GIL), one block ahead of the
    consumer, so that parsing and the caller's encoding overlap on two cores.
    ``on_progress`` receives the number of (compressed) bytes of the file read so far.
    """
    expected = len(layout.file_columns)
    dropped: list[BadLine] = []

    def on_invalid_row(row) -> str:
        # use_threads=False makes pyarrow report physical (1-based) line numbers.
        detail = f"expected {expected} columns, found {row.actual_columns}"
        dropped.append(BadLine(row.number, "column_count", None, detail))
        return "skip"

    read_options = pa_csv.ReadOptions(
        column_names=list(layout.file_columns),
        skip_rows=layout.header_lines,
        use_threads=False,
        block_size=BLOCK_SIZE,
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=layout.delimiter,
        quote_char=False,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid_row,
    )
    convert_options = pa_csv.ConvertOptions(
        include_columns=columns,
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=True,  # an empty value is a null: "missing" is its own token
        quoted_strings_can_be_null=True,
    )
    raw = pa.OSFile(str(path), "rb")
    source = pa.CompressedInputStream(raw, "gzip") if is_gzip(path) else raw

    def parse() -> Iterator[tuple[pa.RecordBatch, list[BadLine], int]]:
        try:
            reader = pa_csv.open_csv(source, read_options, parse_options, convert_options)
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):  # a header and nothing else
                return
            raise
        while True:
            try:
                table = reader.read_next_batch()
            except StopIteration:
                break
            bad, dropped[:] = list(dropped), []
            yield table, bad, raw.tell()
        if dropped:  # rows of wrong width after the last full block
            empty = [pa.array([], pa.string()) for _ in columns]
            yield pa.RecordBatch.from_arrays(empty, names=columns), list(dropped), raw.tell()

    first_row = 0
    try:
        for table, bad, position in _read_ahead(parse()):
            on_progress(position)
            yield RawBatch(table, first_row, bad)
            first_row += table.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"cannot parse the rows after row {first_row}: {exc}") from exc
    finally:
        source.close()
        raw.close()


_BOM = b"\xef\xbb\xbf"


def _buffers(source, block_size: int) -> Iterator[memoryview]:
    """The buffers pyarrow's CSV reader hands to its chunker: reads of ``block_size`` bytes, the
    UTF-8 byte order mark dropped from the first, and the LF of a CR LF split between two reads
    dropped from the second (then an empty buffer ends the stream, as it does in pyarrow).

    The reads go into two buffers in turn, allocated once (fresh memory costs the kernel a
    zeroed page per 4 KiB): a yielded view is valid until the next but one is yielded."""
    first, trailing_cr = True, False
    pair, turn = (bytearray(block_size), bytearray(block_size)), 0
    while True:
        view = memoryview(pair[turn])
        length = source.readinto(view)
        if not length:
            return
        view, turn = view[:length], 1 - turn
        start = 0
        if first:
            start = len(_BOM) if view[: len(_BOM)] == _BOM else 0
            first = False
        if trailing_cr and view[start : start + 1] == b"\n":
            start += 1
        trailing_cr = view[-1:] == b"\r"
        if start == len(view):
            return
        yield view[start:]


def _skip_lines(buffer, count: int) -> memoryview:
    """``buffer`` after its first ``count`` lines (CR LF, CR or LF each end one line)."""
    data, position = bytes(buffer[: 1 << 16]), 0  # a header is far shorter than this
    for _ in range(count):
        ends = [i for i in (data.find(b"\n", position), data.find(b"\r", position)) if i >= 0]
        if not ends:
            raise FastPathUnavailable("the header does not fit in the first block")
        end = min(ends)
        position = end + (2 if data[end : end + 2] == b"\r\n" else 1)
    return memoryview(buffer)[position:]


def _last_line_end(view: memoryview) -> int:
    """Index just after the last CR or LF in ``view``, 0 if it has none."""
    for width in (1 << 12, len(view)):  # lines are short: the last 4 KiB nearly always hold one
        tail = bytes(view[-width:])
        end = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
        if end >= 0:
            return len(view) - len(tail) + end + 1
    return 0


def iter_blocks(path: Path, layout: Layout, block_size: int) -> Iterator[tuple[memoryview, int]]:
    """The raw text of ``path`` cut into the blocks that :func:`iter_raw_batches` parses into
    one record batch each, with the header lines removed; also the (compressed) bytes read.

    pyarrow's streaming reader cuts a block after the last line end of each read of
    ``block_size`` bytes and parses the final read whole. Cutting the same way here keeps every
    batch, hence every batch dictionary and every id, the same while a block is parsed in
    cache-sized pieces (on pyarrow's threads). A block that pyarrow would handle differently (a
    line longer than a read, a byte order mark where a block starts) raises
    :class:`FastPathUnavailable`. A yielded block is a view of a buffer that the next block
    reuses.
    """
    raw = pa.OSFile(str(path), "rb")
    source = pa.CompressedInputStream(raw, "gzip") if is_gzip(path) else raw
    block = bytearray(2 * block_size)  # the rest of the previous read, then this read's lines
    try:
        buffers = _buffers(source, block_size)
        current = next(buffers, None)
        if current is not None and layout.header_lines:
            current = _skip_lines(current, layout.header_lines)
        partial = 0  # bytes at the start of ``block`` carried over from the previous read
        while current is not None:
            following = next(buffers, None)
            if following is None:  # the final read is parsed whole
                block[partial : partial + len(current)] = current
                if partial + len(current):
                    yield _checked(memoryview(block)[: partial + len(current)]), raw.tell()
                return
            cut = _last_line_end(current)
            if cut == 0:
                if current:
                    raise FastPathUnavailable("a line is longer than a block")
            else:
                block[partial : partial + cut] = current[:cut]
                yield _checked(memoryview(block)[: partial + cut]), raw.tell()
                rest = current[cut:]  # after the consumer is done with the block
                block[: len(rest)] = rest
                partial = len(rest)
            current = following
    finally:
        source.close()
        raw.close()


def _checked(block: memoryview) -> memoryview:
    if block[: len(_BOM)] == _BOM:  # pyarrow would drop it when parsing the block alone
        raise FastPathUnavailable("a block starts with a byte order mark")
    return block


def iter_fast_batches(
    path: Path,
    layout: Layout,
    columns: list[str],
    integer_columns: tuple[str, ...],
    on_progress=lambda position: None,
    token_columns: tuple[str, ...] = (),
) -> Iterator[RawBatch]:
    """The batches of :func:`iter_raw_batches` (the same rows in each), parsed without its
    checks: a row of the wrong width or text that does not parse raises
    :class:`FastPathUnavailable`, for the validating parse to report.

    Each block is parsed in pieces of ``PARSE_CHUNK`` bytes on pyarrow's CPU pool, so columns
    come as chunked arrays. ``integer_columns`` are parsed as int64 where pyarrow's integer
    parser reads every value as the reference's float cast does: it also reads 0x... and trims
    blanks, so a block holding an x or a blank reads them as strings.

    ``token_columns`` are read as ``fixed_size_binary(TOKEN_BYTES)`` (the bytes of each value,
    null where the string parse gives null), which hashes about twice as fast as strings, in
    every block where each of their values has that width; in another block they are strings.
    """
    blanks = (b" ", b"x", b"X") + ((b"\t",) if layout.delimiter != "\t" else ())
    read_options = pa_csv.ReadOptions(
        column_names=list(layout.file_columns), use_threads=True, block_size=PARSE_CHUNK
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=layout.delimiter, quote_char=False, ignore_empty_lines=False
    )

    def convert_options(integers: bool, tokens: bool) -> pa_csv.ConvertOptions:
        def column_type(name: str) -> pa.DataType:
            if integers and name in integer_columns:
                return pa.int64()
            return pa.binary(TOKEN_BYTES) if tokens and name in token_columns else pa.string()

        return pa_csv.ConvertOptions(
            include_columns=columns,
            column_types={c: column_type(c) for c in columns},
            strings_can_be_null=True,  # as iter_raw_batches reads them
            quoted_strings_can_be_null=True,
        )

    # what a block is tried as, in order: a parse that fails falls back to the next
    choices = {(i, t): convert_options(i, t) for i in (True, False) for t in (True, False)}
    tokens = bool(token_columns)

    def parse() -> Iterator[tuple[pa.Table, int]]:
        for block, position in iter_blocks(path, layout, BLOCK_SIZE):
            text = block.obj  # the block is the start of this bytearray
            integers = bool(integer_columns) and not any(
                text.find(b, 0, len(block)) >= 0 for b in blanks)
            # e.g. integers written as 260.0, a categorical value of another width
            attempts = list(dict.fromkeys([(integers, tokens), (False, tokens), (False, False)]))
            for k, attempt in enumerate(attempts):
                try:
                    table = pa_csv.read_csv(pa.py_buffer(block), read_options, parse_options,
                                            choices[attempt])
                    break
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    if k == len(attempts) - 1:
                        raise FastPathUnavailable(str(exc)) from exc
            yield table, position

    first_row = 0
    for table, position in _read_ahead(parse()):
        on_progress(position)
        yield RawBatch(table, first_row, [])
        first_row += table.num_rows


def _read_ahead(items: Iterator, depth: int = 1) -> Iterator:
    """Run the iterator ``items`` on a worker thread, ``depth`` items ahead of the consumer."""
    queue: Queue = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put((done, exc))

    worker = threading.Thread(target=work, name="csv-parse", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = queue.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
