"""The data pipeline's rules, one test each, on small files written by the tests."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import criteo_row, write_tsv

from optfusion_lab.cli import main as cli_main
from optfusion_lab.data import DataFormatError, PrepareConfig, get_schema, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.prepare import split_sizes
from optfusion_lab.data.schemas import AVAZU_RAW_COLUMNS


def field_ids(out: Path, split: str = "all") -> np.ndarray:
    """Per-field ids (global id minus the field's offset) of a prepared split."""
    data = PreparedData.open(out)
    x, _ = data.arrays(split)
    return np.asarray(x) - np.asarray(data.meta["offsets"])


def many_criteo_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ints = [str(int(v)) for v in rng.integers(-2, 300, 13)]
        ints[i % 13] = ""  # some missing values
        cats = [f"{int(v):08x}" for v in rng.integers(0, 30, 26)]
        rows.append(criteo_row(str(i % 2), ints, cats))
    return rows


# ---------------------------------------------------------------- schemas


def test_schema_field_counts():
    assert get_schema("criteo").num_fields == 39
    assert get_schema("avazu").num_fields == 24
    assert get_schema("kdd12").num_fields == 11
    assert get_schema("kdd12", drop_impression=True).num_fields == 10
    assert "id" not in get_schema("avazu").fields and "click" not in get_schema("avazu").fields
    assert {"weekday", "is_weekend", "hour"} <= set(get_schema("avazu").fields)


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'movielens'.*criteo"):
        PrepareConfig("movielens")


# ---------------------------------------------------------------- criteo transform


def test_criteo_integer_tokens_follow_the_reference_transform(tmp_path):
    values = ["1", "3", "4", "2", "5", "", "-1", "-2", "100", "100.0", "0"]
    rows = [criteo_row("0", [v] + ["1"] * 12) for v in values]
    out = tmp_path / "out"
    prepare(write_tsv(tmp_path / "c.tsv", rows), tmp_path / "base", PrepareConfig("criteo"))
    prepare(write_tsv(tmp_path / "c.tsv", rows), out, PrepareConfig("criteo"),
            vocab_from=tmp_path / "base")
    ids = field_ids(out)[:, 0]
    by_value = dict(zip(values, ids, strict=True))
    # Reference collisions: 1, 3 and 4 share token 1; 2 and 5 share token 2.
    assert by_value["1"] == by_value["3"] == by_value["4"]
    assert by_value["2"] == by_value["5"]
    assert by_value["1"] != by_value["2"]
    # floor(ln(100)^2) = 21, whether written as 100 or 100.0.
    assert by_value["100"] == by_value["100.0"]
    # Missing and negative values are tokens of their own; nothing is OOV (not thresholded).
    distinct = {by_value[v] for v in ["1", "2", "", "-1", "-2", "100", "0"]}
    assert len(distinct) == 7 and 0 not in distinct


def test_criteo_integer_token_values():
    from optfusion_lab.data.transforms import criteo_integer_tokens

    values = np.array([1, 2, 3, 4, 5, 100, 0, -1, 2.5, np.nan])
    tokens = criteo_integer_tokens(values).to_pylist()
    expected = [1, 2, 1, 1, 2, math.floor(math.log(100) ** 2), 0, -1, 0, None]
    assert tokens == expected


def test_categorical_threshold_maps_rare_tokens_to_oov(tmp_path):
    cats_common = ["aaaaaaaa"] * 26
    cats_rare = ["bbbbbbbb"] * 26
    rows = [criteo_row("0", cats=cats_common)] * 3 + [criteo_row("1", cats=cats_rare)]
    out = tmp_path / "out"
    meta = prepare(write_tsv(tmp_path / "c.tsv", rows), out, PrepareConfig("criteo", threshold=2))
    # Each C-field keeps one token (seen 3 times) plus OOV; the singleton went to OOV.
    assert meta["cardinalities"][13:] == [2] * 26
    meta3 = prepare(tmp_path / "c.tsv", tmp_path / "t4", PrepareConfig("criteo", threshold=4))
    assert meta3["cardinalities"][13:] == [1] * 26  # nothing reaches 4: only the OOV id
    meta1 = prepare(tmp_path / "c.tsv", tmp_path / "t1", PrepareConfig("criteo", threshold=1))
    assert meta1["cardinalities"][13:] == [3] * 26


def test_global_ids_use_field_offsets(tmp_path):
    out = tmp_path / "out"
    meta = prepare(write_tsv(tmp_path / "c.tsv", many_criteo_rows(200)), out,
                   PrepareConfig("criteo"))
    cards = np.array(meta["cardinalities"])
    assert meta["offsets"] == np.concatenate([[0], np.cumsum(cards)[:-1]]).tolist()
    assert meta["num_features"] == cards.sum()
    x = np.concatenate([PreparedData.open(out).arrays(s)[0] for s in ("train", "valid", "test")])
    assert x.dtype == np.int32 and x.shape == (200, 39)
    local = x - np.array(meta["offsets"])
    assert (local >= 0).all() and (local < cards).all()


# ---------------------------------------------------------------- split


@pytest.mark.parametrize("n", [1, 7, 10, 199, 1999])
def test_split_sizes_are_exact(n):
    sizes = split_sizes(n)
    assert sizes["train"] == math.floor(0.8 * n)
    assert sizes["valid"] == math.floor(0.1 * n)
    assert sum(sizes.values()) == n


def test_split_is_a_seeded_partition(tmp_path):
    rows = many_criteo_rows(100)
    for r, i in zip(rows, range(100), strict=True):
        r[14] = f"{i:08x}"  # C1 identifies the row
    raw = write_tsv(tmp_path / "c.tsv", rows)
    cfg = PrepareConfig("criteo", threshold=1, seed=7)
    meta = prepare(raw, tmp_path / "a", cfg)
    assert meta["num_rows"] == {"train": 80, "valid": 10, "test": 10}
    data = PreparedData.open(tmp_path / "a")
    ids = {s: set(data.arrays(s)[0][:, 13].tolist()) for s in ("train", "valid", "test")}
    assert set.union(*ids.values()) == set(np.arange(100) + 1 + meta["offsets"][13])
    assert sum(len(v) for v in ids.values()) == 100  # disjoint
    # Same seed, same split; another seed, another split.
    prepare(raw, tmp_path / "b", cfg)
    again = PreparedData.open(tmp_path / "b").arrays("test")[0]
    assert np.array_equal(data.arrays("test")[0], again)
    prepare(raw, tmp_path / "c", PrepareConfig("criteo", threshold=1, seed=8))
    other = PreparedData.open(tmp_path / "c").arrays("test")[0]
    assert not np.array_equal(data.arrays("test")[0], other)
    # Labels travel with their rows, and num_positive counts them.
    y = data.arrays("train")[1]
    assert y.dtype == np.float32 and meta["num_positive"]["train"] == int(y.sum())


# ---------------------------------------------------------------- layouts


def test_criteo_layout_variants_encode_identically(tmp_path):
    rows = many_criteo_rows(60)
    header = ["Label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    variants = {
        "official.tsv": "".join("\t".join(r) + "\n" for r in rows),
        "crlf.tsv": "".join("\t".join(r) + "\r\n" for r in rows),
        "kaggle.csv": ",".join(["Id", *header]) + "\r\n"
        + "".join(",".join([str(10_000_000 + i), *r]) + "\r\n" for i, r in enumerate(rows)),
        "floats.csv": ",".join(["label", *header[1:]]) + "\n"
        + "".join(
            ",".join([r[0], *[f"{v}.0" if v else "" for v in r[1:14]], *r[14:]]) + "\n"
            for r in rows
        ),
    }
    encoded = {}
    for name, text in variants.items():
        (tmp_path / name).write_text(text)
        prepare(tmp_path / name, tmp_path / f"out-{name}", PrepareConfig("criteo"))
        data = PreparedData.open(tmp_path / f"out-{name}")
        encoded[name] = [np.asarray(a) for s in data.meta["splits"] for a in data.arrays(s)]
    gz = tmp_path / "official.tsv.gz"
    gz.write_bytes(gzip.compress(variants["official.tsv"].encode()))
    prepare(gz, tmp_path / "out-gz", PrepareConfig("criteo"))
    data = PreparedData.open(tmp_path / "out-gz")
    encoded["gz"] = [np.asarray(a) for s in data.meta["splits"] for a in data.arrays(s)]
    reference = encoded.pop("official.tsv")
    for name, arrays in encoded.items():
        for a, b in zip(reference, arrays, strict=True):
            assert np.array_equal(a, b), name


def test_avazu_time_fields(tmp_path):
    header = ",".join(AVAZU_RAW_COLUMNS)
    rest = ["1005", "0"] + ["abcd1234"] * 9 + ["1", "2"] + ["15706", "320", "50", "1722", "0",
                                                           "35", "-1", "79"]
    hours = ["14102100", "14102513", "14102623", "14102100"]  # Tue, Sat, Sun, Tue
    lines = [header] + [",".join([str(i), "0" if i % 2 else "1", h, *rest]) for i, h in
                        enumerate(hours)]
    raw = tmp_path / "avazu.csv"
    raw.write_text("\n".join(lines) + "\n")
    prepare(raw, tmp_path / "base", PrepareConfig("avazu", threshold=1))
    meta = prepare(raw, tmp_path / "all", PrepareConfig("avazu", threshold=1),
                   vocab_from=tmp_path / "base")
    assert meta["num_fields"] == 24
    from optfusion_lab.data.vocab import Vocabulary

    schema = get_schema("avazu")
    vocab = Vocabulary.load(tmp_path / "base" / "vocab.parquet", schema.fields)
    ids = field_ids(tmp_path / "all")
    decoded = {
        name: [vocab.tokens[f][i - 1].as_py() for i in ids[:, f]]
        for f, name in enumerate(schema.fields)
        if name in ("hour", "weekday", "is_weekend")
    }
    assert decoded["hour"] == ["00", "13", "23", "00"]
    assert decoded["weekday"] == ["1", "5", "6", "1"]
    assert decoded["is_weekend"] == ["false", "true", "true", "false"]
    assert meta["num_positive"]["all"] == 2


def test_kdd12_ids_beyond_int64_and_click_counts(tmp_path):
    big = "13677630321509009335"  # > int64 max
    rows = [
        ["0", "1", big, "1", "2", "2", "1", "5", "6", "7", "8", "9"],
        ["2", "3", big, "1", "2", "2", "1", "5", "6", "7", "8", "9"],
        ["1", "1", "42", "1", "2", "2", "1", "5", "6", "7", "8", "9"],
    ]
    raw = write_tsv(tmp_path / "kdd.tsv", rows)
    meta = prepare(raw, tmp_path / "base", PrepareConfig("kdd12", threshold=1))
    assert meta["num_fields"] == 11
    cfg = PrepareConfig("kdd12", threshold=1)
    prepare(raw, tmp_path / "all", cfg, vocab_from=tmp_path / "base")
    data = PreparedData.open(tmp_path / "all")
    assert data.arrays("all")[1].tolist() == [0.0, 1.0, 1.0]  # label = Click > 0
    ids = field_ids(tmp_path / "all")
    display_url = data.field_names.index("DisplayURL")
    assert ids[0, display_url] == ids[1, display_url] != ids[2, display_url]
    dropped = prepare(raw, tmp_path / "d", PrepareConfig("kdd12", drop_impression=True))
    assert dropped["num_fields"] == 10 and "Impression" not in dropped["field_names"]


# ---------------------------------------------------------------- bad input


def bad_file(tmp_path: Path, bad_line: list[str] | str, at: int = 5, n: int = 10) -> Path:
    rows = ["\t".join(r) for r in many_criteo_rows(n)]
    rows.insert(at - 1, bad_line if isinstance(bad_line, str) else "\t".join(bad_line))
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "kind", "message"),
    [
        ("\t".join(criteo_row()[:30]), "column_count", r"line 5: expected 40 columns, found 30"),
        ("\t".join(criteo_row("0", ["1", "x7"] + ["1"] * 11)), "non_numeric",
         r"line 5, field I2: an integer field needs a number, found 'x7'"),
        ("\t".join(criteo_row("2")), "bad_label", r"line 5, field label: label must be 0 or 1"),
        ("\t".join(criteo_row("")), "bad_label", r"line 5, field label: .*empty value"),
        ("", "bad_label", r"line 5, field label"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, kind, message):
    path = bad_file(tmp_path, line)
    with pytest.raises(DataFormatError, match=message) as info:
        prepare(path, tmp_path / "out", PrepareConfig("criteo"))
    assert info.value.kind == kind and info.value.line == 5 and "bad.tsv" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tsv"]  # no scratch left behind


def test_skip_mode_drops_and_reports_bad_lines(tmp_path):
    rows = ["\t".join(r) for r in many_criteo_rows(20)]
    rows[3] = "\t".join(criteo_row()[:12])  # line 4: too few columns
    rows[6] = "\t".join(criteo_row("0", ["nan?"] + ["1"] * 12))  # line 7: non-numeric
    rows[9] = "\t".join(criteo_row("yes"))  # line 10: bad label
    rows[12] = "\t".join(criteo_row("1", ["-5"] * 13))  # negative integers are valid
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(rows) + "\n")
    meta = prepare(path, tmp_path / "out", PrepareConfig("criteo", on_bad_lines="skip"))
    assert sum(meta["num_rows"].values()) == 17
    report = meta["bad_lines"]
    assert report["skipped"] == 3
    assert report["by_kind"] == {"bad_label": 1, "column_count": 1, "non_numeric": 1}
    assert [e["line"] for e in report["examples"]] == [4, 7, 10]


def test_line_numbers_after_dropped_lines_and_header(tmp_path):
    header = ",".join(["Id", "Label"] + [f"I{i}" for i in range(1, 14)] +
                      [f"C{i}" for i in range(1, 27)])
    good = [",".join([str(i), *r]) for i, r in enumerate(many_criteo_rows(8))]
    good[2] = "1,2,3"  # line 4 (after the header): wrong width, dropped in skip mode
    good[5] = ",".join(["5", *criteo_row("7")])  # line 7: bad label
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *good]) + "\n")
    meta = prepare(path, tmp_path / "out", PrepareConfig("criteo", on_bad_lines="skip"))
    assert [e["line"] for e in meta["bad_lines"]["examples"]] == [4, 7]
    with pytest.raises(DataFormatError, match="line 4"):
        prepare(path, tmp_path / "out2", PrepareConfig("criteo"))


def test_empty_missing_and_header_only_files(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty.tsv: input file is empty"):
        prepare(empty, tmp_path / "o", PrepareConfig("criteo"))
    with pytest.raises(DataFormatError, match="nope.tsv: input file not found"):
        prepare(tmp_path / "nope.tsv", tmp_path / "o", PrepareConfig("criteo"))
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(AVAZU_RAW_COLUMNS) + "\n")
    with pytest.raises(DataFormatError, match="header.csv: no data rows"):
        prepare(header_only, tmp_path / "o", PrepareConfig("avazu"))
    wrong = write_tsv(tmp_path / "wrong.tsv", [["1", "2", "3"]])
    with pytest.raises(DataFormatError, match="line 1: expected 40 columns"):
        prepare(wrong, tmp_path / "o", PrepareConfig("criteo"))
    assert not (tmp_path / "o").exists()


def test_unlabelled_file_needs_a_vocabulary(tmp_path):
    rows = [r[1:] for r in many_criteo_rows(10)]  # 39 columns: no label
    path = write_tsv(tmp_path / "test.tsv", rows)
    with pytest.raises(DataFormatError, match="no label column.*--vocab-from"):
        prepare(path, tmp_path / "o", PrepareConfig("criteo"))


# ---------------------------------------------------------------- output and reuse


def test_failed_run_keeps_the_previous_dataset(tmp_path):
    good = write_tsv(tmp_path / "good.tsv", many_criteo_rows(30))
    out = tmp_path / "out"
    meta = prepare(good, out, PrepareConfig("criteo"))
    before = (out / "X_train.npy").read_bytes()
    bad = bad_file(tmp_path, "\t".join(criteo_row("9")), at=20, n=30)
    with pytest.raises(DataFormatError):
        prepare(bad, out, PrepareConfig("criteo"))
    assert (out / "X_train.npy").read_bytes() == before
    assert json.loads((out / "meta.json").read_text())["source"] == meta["source"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "good.tsv", "out"]


def test_same_file_and_options_reuse_the_output(tmp_path):
    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(30))
    out = tmp_path / "out"
    first = prepare(raw, out, PrepareConfig("criteo"))
    stamp = (out / "X_train.npy").stat().st_mtime_ns
    again = prepare(raw, out, PrepareConfig("criteo"))
    assert again["reused"] and not first["reused"]
    assert (out / "X_train.npy").stat().st_mtime_ns == stamp
    changed = prepare(raw, out, PrepareConfig("criteo", seed=3))
    assert not changed["reused"] and changed["seed"] == 3
    raw.write_text(raw.read_text() + "\t".join(criteo_row()) + "\n")  # new content
    assert not prepare(raw, out, PrepareConfig("criteo", seed=3))["reused"]
    (out / "X_valid.npy").unlink()  # an incomplete dataset is never trusted
    assert not prepare(raw, out, PrepareConfig("criteo", seed=3))["reused"]


def test_meta_json_content(tmp_path):
    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(50))
    meta = prepare(raw, tmp_path / "out", PrepareConfig("criteo"))
    on_disk = json.loads((tmp_path / "out" / "meta.json").read_text())
    for key in ("dataset", "field_names", "num_fields", "cardinalities", "offsets",
                "num_features", "num_rows", "num_positive", "threshold", "seed",
                "library_version"):
        assert on_disk[key] == meta[key], key
    import hashlib

    assert on_disk["source"]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert set(on_disk["num_rows"]) == {"train", "valid", "test"}
    x = np.load(tmp_path / "out" / "X_train.npy", mmap_mode="r")
    assert isinstance(x, np.memmap)


def test_vocab_from_encodes_new_and_unlabelled_files(tmp_path):
    rows = many_criteo_rows(40)
    base = tmp_path / "base"
    prepare(write_tsv(tmp_path / "train.tsv", rows), base, PrepareConfig("criteo"))
    unlabelled = [r[1:] for r in rows[:5]]
    unlabelled[0][13] = "zzzzzzzz"  # C1 never seen: OOV
    meta = prepare(write_tsv(tmp_path / "test.tsv", unlabelled), tmp_path / "enc",
                   PrepareConfig("criteo"), vocab_from=base)
    assert meta["splits"] == ["all"] and not meta["labelled"]
    assert meta["cardinalities"] == json.loads((base / "meta.json").read_text())["cardinalities"]
    labelled = prepare(tmp_path / "train.tsv", tmp_path / "enc2", PrepareConfig("criteo"),
                       vocab_from=base)
    new = field_ids(tmp_path / "enc")
    same = field_ids(tmp_path / "enc2")[:5]
    assert new[0, 13] == 0 and same[0, 13] != 0  # the unseen token is OOV
    assert np.array_equal(new[1:], same[1:])  # the rest encodes as in the training data
    assert labelled["labelled"]
    with pytest.raises(ValueError, match="holds criteo data"):
        prepare(tmp_path / "train.tsv", tmp_path / "x", PrepareConfig("kdd12"), vocab_from=base)


# ---------------------------------------------------------------- command line


def test_cli_prepare_prints_a_summary(tmp_path, capsys):
    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(30))
    code = cli_main(["prepare", "--dataset", "criteo", "--input", str(raw),
                     "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "rows      30 (train 24, valid 3, test 3)" in out and "fields    39" in out


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    raw = bad_file(tmp_path, "\t".join(criteo_row("0", ["abc"] * 13)), at=3)
    code = cli_main(["prepare", "--dataset", "criteo", "--input", str(raw),
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.tsv, line 3, field I1" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        cli_main(["prepare", "--dataset", "nope", "--input", str(raw), "--out", "o"])
    assert info.value.code == 2


def test_prepare_command_does_not_import_torch(tmp_path):
    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(10))
    code = (
        "import sys; from optfusion_lab.cli import main; "
        f"rc = main(['prepare', '--dataset', 'criteo', '--input', {str(raw)!r}, "
        f"'--out', {str(tmp_path / 'o')!r}]); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_prepare_in_its_own_process_skips_pandas_and_writes_the_same_dataset(tmp_path):
    """The console script tells pyarrow that pandas is absent (its import is a tenth of
    preparing 1M rows); the dataset is the same bytes, and a caller's process keeps pandas."""
    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(200))
    args = ["prepare", "--dataset", "criteo", "--input", str(raw)]
    code = (
        "import sys; from optfusion_lab.cli import main; "
        f"rc = main({args + ['--out', str(tmp_path / 'own')]!r}, own_process=True); "
        "assert rc == 0; assert 'pandas' not in sys.modules, 'pandas was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert cli_main(args + ["--out", str(tmp_path / "here")]) == 0  # in this process
    import pyarrow as pa

    assert pa.table({"a": [1]}).to_pandas().shape == (1, 1)  # pyarrow still finds pandas here
    for name in ("X_train.npy", "X_valid.npy", "X_test.npy", "y_train.npy", "vocab.parquet"):
        assert (tmp_path / "own" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_codes_spilled_to_scratch_give_the_same_dataset(tmp_path, monkeypatch):
    import importlib

    # (the package re-exports the function `prepare`, which shadows the module's name)
    prepare_module = importlib.import_module("optfusion_lab.data.prepare")
    reader_module = importlib.import_module("optfusion_lab.data.reader")

    raw = write_tsv(tmp_path / "c.tsv", many_criteo_rows(300))
    monkeypatch.setattr(reader_module, "BLOCK_SIZE", 4096)  # many small batches
    prepare(raw, tmp_path / "memory", PrepareConfig("criteo"))
    monkeypatch.setattr(prepare_module, "CODES_MEMORY_BUDGET", 1000)  # spill after one batch
    written = []
    original = prepare_module.CodeStore.append

    def spy(self, block):
        original(self, block)
        written.append(self._file is not None)

    monkeypatch.setattr(prepare_module.CodeStore, "append", spy)
    prepare(raw, tmp_path / "spilled", PrepareConfig("criteo"))
    assert len(written) > 3 and written[-1]  # several batches, and the store went to disk
    assert not any(p.name.endswith("scratch") for p in (tmp_path / "spilled").iterdir())
    a, b = PreparedData.open(tmp_path / "memory"), PreparedData.open(tmp_path / "spilled")
    assert a.meta["cardinalities"] == b.meta["cardinalities"]
    for split in ("train", "valid", "test"):
        for x, y in zip(a.arrays(split), b.arrays(split), strict=True):
            assert np.array_equal(x, y)
