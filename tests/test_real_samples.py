"""The pipeline on real Criteo and Avazu rows, read from OPTFUSION_REAL_SAMPLES (never copied)."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData


def all_rows(out) -> np.ndarray:
    data = PreparedData.open(out)
    return np.concatenate([data.arrays(s)[0] for s in data.meta["splits"]])


def test_criteo_kaggle_csv_layout(real_samples, tmp_path):
    raw = real_samples / "criteo" / "kaggle2014criteo_train.tiny.csv"
    meta = prepare(raw, tmp_path / "out", PrepareConfig("criteo"))
    assert meta["num_fields"] == 39 and meta["source"]["layout"]["header"]
    assert meta["num_rows"] == {"train": 1599, "valid": 199, "test": 201}
    assert 0.1 < sum(meta["num_positive"].values()) / 1999 < 0.4
    local = all_rows(tmp_path / "out") - np.array(meta["offsets"])
    assert not (local[:, :13] == 0).any()  # I-fields are never thresholded
    # A C-field token is OOV (id 0) exactly when it occurs fewer than 2 times in the file.
    with open(raw, newline="") as f:
        rows = list(csv.reader(f))[1:]
    counts_per_field = [Counter(r[15 + j] for r in rows) for j in range(26)]
    rare = np.array([[counts_per_field[j][r[15 + j]] < 2 for j in range(26)] for r in rows])
    assert rare.sum() > 100
    assert np.array_equal(rare.sum(0), (local[:, 13:] == 0).sum(0))


def test_official_tsv_layout_of_the_same_rows_encodes_identically(real_samples, tmp_path):
    raw = real_samples / "criteo" / "kaggle2014criteo_train.tiny.csv"
    with open(raw, newline="") as f:
        rows = list(csv.reader(f))[1:]
    official = tmp_path / "train.txt"  # label, I1..I13, C1..C26, TAB, no header (Id dropped)
    official.write_text("".join("\t".join(r[1:]) + "\n" for r in rows))
    prepare(raw, tmp_path / "csv", PrepareConfig("criteo"))
    prepare(official, tmp_path / "tsv", PrepareConfig("criteo"))
    a, b = PreparedData.open(tmp_path / "csv"), PreparedData.open(tmp_path / "tsv")
    assert a.meta["cardinalities"] == b.meta["cardinalities"]
    for split in ("train", "valid", "test"):
        for x, y in zip(a.arrays(split), b.arrays(split), strict=True):
            assert np.array_equal(x, y)


def test_deepctr_float_layout(real_samples, tmp_path):
    raw = real_samples / "criteo" / "deepctr_criteo_sample.txt"
    meta = prepare(raw, tmp_path / "out", PrepareConfig("criteo"))
    assert sum(meta["num_rows"].values()) == 200 and meta["bad_lines"]["skipped"] == 0
    # Written as floats (260.0) or ints (260), a value gives the same token.
    with open(raw, newline="") as f:
        rows = list(csv.reader(f))
    as_ints = tmp_path / "ints.csv"
    as_ints.write_text("".join(
        ",".join(v[:-2] if v.endswith(".0") else v for v in r) + "\n" for r in rows
    ))
    prepare(as_ints, tmp_path / "ints", PrepareConfig("criteo"))
    assert np.array_equal(all_rows(tmp_path / "out"), all_rows(tmp_path / "ints"))


def test_criteo_unlabelled_test_file_with_training_vocabulary(real_samples, tmp_path):
    train = real_samples / "criteo" / "kaggle2014criteo_train.tiny.csv"
    test = real_samples / "criteo" / "kaggle2014criteo_test.tiny.csv"
    prepare(train, tmp_path / "train", PrepareConfig("criteo"))
    with open(test, newline="") as f:
        rows = list(csv.reader(f))[1:]
    unlabelled = tmp_path / "test.txt"  # the official test layout: 39 columns, no label
    unlabelled.write_text("".join("\t".join(r[2:]) + "\n" for r in rows))
    meta = prepare(unlabelled, tmp_path / "enc", PrepareConfig("criteo"),
                   vocab_from=tmp_path / "train")
    assert meta["num_rows"] == {"all": 1999} and not meta["labelled"]
    local = all_rows(tmp_path / "enc") - np.array(meta["offsets"])
    # Test rows carry tokens the training rows never had: they map to OOV, and nothing
    # falls outside the training vocabulary.
    assert 0 < (local[:, 13:] == 0).mean() < 0.5
    assert (local >= 0).all() and (local < np.array(meta["cardinalities"])).all()


@pytest.mark.parametrize("name", ["kaggleavazu_tr.rx.csv", "deepctr_avazu_sample.txt"])
def test_avazu_samples(real_samples, tmp_path, name):
    meta = prepare(real_samples / "avazu" / name, tmp_path / "out", PrepareConfig("avazu"))
    n = sum(meta["num_rows"].values())
    assert meta["num_fields"] == 24 and n in (2994, 100)
    assert meta["num_rows"]["train"] == int(0.8 * n)
    assert 0.05 < sum(meta["num_positive"].values()) / n < 0.4
