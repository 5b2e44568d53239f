"""The fast pass of prepare (Criteo) gives exactly what the validating pass gives.

``prepare`` first reads a Criteo file with the fast pass (blocks cut as pyarrow's streaming
reader cuts them, integers parsed by pyarrow, no per-row checks) and falls back to the
validating pass at anything it would have to report. These tests run both on the same inputs,
at tiny block sizes so that every file spans many blocks, and compare every output byte.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import DATA_SAMPLES, criteo_row

from optfusion_lab.data import DataFormatError, PrepareConfig, prepare

prepare_module = importlib.import_module("optfusion_lab.data.prepare")
reader = importlib.import_module("optfusion_lab.data.reader")

CRITEO_HEADER = ["Label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def varied_criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Rows with missing values, negatives, large values and a long tail of categories."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ints = [str(int(v)) for v in rng.integers(-3, 40, 13)]
        ints[i % 13] = ""
        if i % 7 == 0:
            ints[3] = str(int(rng.integers(0, 10**9)))
        if i % 11 == 0:
            ints[5] = str(-int(rng.integers(0, 10**7)))  # a batch with a wide range of tokens
        cats = [f"{int(v):08x}" for v in rng.zipf(1.3, 26) % 5000]
        cats[(i * 5) % 26] = ""
        rows.append(criteo_row(str(int(rng.random() < 0.3)), ints, cats))
    return rows


def outputs(out: Path) -> dict:
    """Everything a prepared dataset holds, comparable with ==."""
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("seconds")
    meta["options"].pop("vocab_from")
    meta["source"].pop("path")
    result = {"meta": meta, "vocab": pq.read_table(out / "vocab.parquet").to_pydict()}
    for path in sorted(out.glob("*.npy")):
        result[path.name] = path.read_bytes()
    return result


def _validating_only(monkeypatch):
    original = prepare_module._parse
    monkeypatch.setattr(prepare_module, "_parse",
                        lambda *args, fast=False, **kw: original(*args, **kw))


def prepare_both(monkeypatch, raw: Path, tmp: Path, cfg: PrepareConfig, **kwargs) -> dict:
    """Prepare ``raw`` with the fast pass (asserting that it did not fall back) and with the
    validating pass only; return the outputs after checking that they are equal."""
    original = prepare_module._parse

    def fast_only(*args, fast=False, **kw):
        assert fast, "the fast pass fell back to the validating pass"
        return original(*args, fast=fast, **kw)

    with monkeypatch.context() as m:
        m.setattr(prepare_module, "_parse", fast_only)
        prepare(raw, tmp / "fast", cfg, **kwargs)
    with monkeypatch.context() as m:
        _validating_only(m)
        prepare(raw, tmp / "validating", cfg, **kwargs)
    fast, slow = outputs(tmp / "fast"), outputs(tmp / "validating")
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key] == slow[key], key
    return fast


def default_and_validating(monkeypatch, raw: Path, tmp: Path) -> dict:
    """What the command gives for ``raw`` (outputs, or the error it raises) and what the
    validating pass alone gives; asserts they are the same."""
    results = {}
    for name in ("default", "validating"):
        with monkeypatch.context() as m:
            if name == "validating":
                _validating_only(m)
            try:
                prepare(raw, tmp / name, PrepareConfig("criteo"))
                results[name] = outputs(tmp / name)
            except Exception as exc:  # the same error, whatever it is
                results[name] = (type(exc), str(exc).replace(str(tmp / name), "OUT"))
    assert results["default"] == results["validating"]
    return results


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(reader, "BLOCK_SIZE", 4096)
    monkeypatch.setattr(reader, "PARSE_CHUNK", 1000)  # several pieces per block


def test_criteo_layouts_at_small_blocks(tmp_path, monkeypatch, small_blocks):
    rows = varied_criteo_rows(400)
    lf = "".join("\t".join(r) + "\n" for r in rows)
    variants = {
        "lf.tsv": lf.encode(),
        "crlf.tsv": "".join("\t".join(r) + "\r\n" for r in rows).encode(),
        "no-final-newline.tsv": lf.rstrip("\n").encode(),
        "kaggle.csv": (",".join(["Id", *CRITEO_HEADER]) + "\r\n" + "".join(
            ",".join([str(10_000_000 + i), *r]) + "\r\n" for i, r in enumerate(rows))).encode(),
        "floats.csv": (",".join(["label", *CRITEO_HEADER[1:]]) + "\n" + "".join(
            ",".join([r[0], *[f"{v}.0" if v else "" for v in r[1:14]], *r[14:]]) + "\n"
            for r in rows)).encode(),
        "bom.tsv": b"\xef\xbb\xbf" + lf.encode(),
        "gz.tsv.gz": gzip.compress(lf.encode()),
    }
    for name, content in variants.items():
        raw = tmp_path / name
        raw.write_bytes(content)
        for threshold in (1, 3):
            prepare_both(monkeypatch, raw, tmp_path / f"{name}-{threshold}",
                         PrepareConfig("criteo", threshold=threshold))


def test_default_blocks_and_the_embedded_sample(tmp_path, monkeypatch):
    raw = tmp_path / "c.tsv"
    raw.write_text("".join("\t".join(r) + "\n" for r in varied_criteo_rows(300)))
    prepare_both(monkeypatch, raw, tmp_path / "c", PrepareConfig("criteo"))
    prepare_both(monkeypatch, DATA_SAMPLES / "criteo_sample.txt.gz", tmp_path / "s",
                 PrepareConfig("criteo"))


def test_crlf_split_between_blocks(tmp_path, monkeypatch):
    """A CR LF cut in two by a block boundary: pyarrow drops the LF, and so must the blocks."""
    line = "\t".join(criteo_row()) + "\r\n"
    monkeypatch.setattr(reader, "BLOCK_SIZE", len(line) * 3 - 1)  # the cut falls inside CR LF
    raw = tmp_path / "crlf.tsv"
    raw.write_text("".join(line.replace("68fd1e64", f"{i:08x}", 1) for i in range(50)),
                   newline="")
    prepare_both(monkeypatch, raw, tmp_path, PrepareConfig("criteo", threshold=1))


def test_vocab_from_and_unlabelled(tmp_path, monkeypatch, small_blocks):
    train = tmp_path / "train.tsv"
    train.write_text("".join("\t".join(r) + "\n" for r in varied_criteo_rows(300)))
    base = tmp_path / "base"
    prepare(train, base, PrepareConfig("criteo"))
    unlabelled = tmp_path / "test.tsv"
    unlabelled.write_text("".join("\t".join(r[1:]) + "\n" for r in varied_criteo_rows(200, 1)))
    prepare_both(monkeypatch, unlabelled, tmp_path / "enc", PrepareConfig("criteo"),
                 vocab_from=base)


@pytest.mark.parametrize(
    "value",
    ["0x10", "0X1f", " 5", "5 ", "+5", "1e3", "007", "-0", "99999999999999999999", "NaN", "NA",
     "nan", "inf", "1e400", "x7"],
)
def test_unusual_integers_behave_as_in_the_validating_pass(tmp_path, monkeypatch, value):
    """pyarrow's int64 parser reads hexadecimal and trims blanks; the reference's float cast
    does neither. Whatever the validating pass does with a value, the command does."""
    rows = [criteo_row("0", [value] + ["1"] * 12)] + varied_criteo_rows(30)
    raw = tmp_path / "c.tsv"
    raw.write_text("".join("\t".join(r) + "\n" for r in rows))
    default_and_validating(monkeypatch, raw, tmp_path)


@pytest.mark.parametrize(
    "value",
    [b"abc", b"123456789", b"-1.#QNAN", b"#N/A N/A", b"NULL", "\u00e4\u00f6\u00fc\u00df".encode(),
     b"\xff\xfe\xfdabcde", b"ab cdefg"],
)
def test_unusual_categorical_values_behave_as_in_the_validating_pass(tmp_path, monkeypatch,
                                                                     small_blocks, value):
    """The fast pass reads the categorical fields as 8-byte tokens in every block where each
    value has 8 bytes; one odd value makes its block strings, and the batches' dictionaries
    then mix both kinds. A value that is not UTF-8 is the validating pass's to report. Either
    way the command gives what the validating pass gives."""
    rows = varied_criteo_rows(300)
    lines = ["\t".join(r).encode() for r in rows]
    cells = lines[150].split(b"\t")
    cells[14 + 3] = value  # C4 of row 151: one block among many
    lines[150] = b"\t".join(cells)
    raw = tmp_path / "c.tsv"
    raw.write_bytes(b"\n".join(lines) + b"\n")
    try:
        value.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    if utf8:  # another width, or a null token: the fast pass takes it
        prepare_both(monkeypatch, raw, tmp_path / "both", PrepareConfig("criteo", threshold=1))
    results = default_and_validating(monkeypatch, raw, tmp_path)
    if not utf8:
        kind, message = results["default"]
        assert kind is DataFormatError and "Row #151" in message and "UTF8" in message, message


def test_bad_lines_are_found_by_the_validating_pass(tmp_path, monkeypatch, small_blocks):
    rows = ["\t".join(r) for r in varied_criteo_rows(300)]
    rows[200] = "\t".join(criteo_row("2"))
    raw = tmp_path / "bad.tsv"
    raw.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv, line 201, field label"):
        prepare(raw, tmp_path / "o", PrepareConfig("criteo"))
    meta = prepare(raw, tmp_path / "skip", PrepareConfig("criteo", on_bad_lines="skip"))
    assert meta["bad_lines"]["skipped"] == 1 and sum(meta["num_rows"].values()) == 299


def _line_count(block: memoryview) -> int:
    block = bytes(block)  # a view of a reused buffer: read it now
    return len(re.findall(rb"\r\n|\r|\n", block)) + (not block.endswith((b"\n", b"\r")))


@pytest.mark.parametrize("block_size", [16, 97, 256, 1000])
def test_blocks_are_the_batches_of_the_streaming_reader(tmp_path, monkeypatch, block_size):
    """iter_blocks cuts the text where pyarrow's streaming reader cuts its batches: line ends
    of every kind (and CR LF cut by a read), empty lines, a byte order mark, a header, no final
    line end. (One column, so that no row is dropped and every batch keeps all its rows.)"""
    rng = np.random.default_rng(block_size)
    ends = ["\n", "\r\n", "\r"]
    text = "".join("x" * int(rng.integers(0, 5)) + ends[int(rng.integers(0, 3))]
                   for _ in range(600))
    monkeypatch.setattr(reader, "BLOCK_SIZE", block_size)
    for name, content, header in (
        ("a.csv", b"a\r\n" + text.encode(), True),
        ("b.csv", text.encode()[:-1], False),
        ("c.csv", b"\xef\xbb\xbf" + text.encode(), False),
        ("d.csv", text.encode(), False),
    ):
        raw = tmp_path / name
        raw.write_bytes(content)
        layout = reader.Layout(",", header, True, ("a",))
        batches = [b.table.num_rows for b in reader.iter_raw_batches(raw, layout, ["a"])]
        blocks = [_line_count(b) for b, _ in reader.iter_blocks(raw, layout, block_size)]
        assert [b for b in batches if b] == blocks, name
