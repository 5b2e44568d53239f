"""The synthetic generator: reproducible embedded samples and a planted, learnable truth."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import DATA_SAMPLES
from sklearn.metrics import roc_auc_score

from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.synthetic import PLANTED, SAMPLES, column_specs, generate, to_raw_bytes


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_embedded_samples_are_reproduced_by_the_generator(dataset):
    name, rows, seed = SAMPLES[dataset]
    committed = gzip.decompress((DATA_SAMPLES / name).read_bytes())
    assert to_raw_bytes(generate(dataset, rows, seed)) == committed
    assert (DATA_SAMPLES / name).stat().st_size <= 1 << 20


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_embedded_samples_prepare_cleanly(dataset, tmp_path):
    name, rows, _ = SAMPLES[dataset]
    meta = prepare(DATA_SAMPLES / name, tmp_path / "out", PrepareConfig(dataset))
    assert sum(meta["num_rows"].values()) == rows and meta["bad_lines"]["skipped"] == 0
    assert 0.1 < sum(meta["num_positive"].values()) / rows < 0.4


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_planted_truth_explains_the_labels(dataset):
    data = generate(dataset, 20_000, seed=5)
    assert roc_auc_score(data.labels, data.logits) > 0.75
    planted = PLANTED[dataset]
    names = {s.name for s in column_specs(dataset)}
    roles = set(planted.first_order) | set(planted.nonlinear) | {c for p in planted.crosses
                                                                 for c in p}  # fmt: skip
    assert roles <= names


def test_structure_depends_on_the_seed_not_the_row_count():
    small, large = generate("criteo", 500, seed=3), generate("criteo", 2000, seed=3)
    # Same latent values give the same logit in both files.
    key = np.stack([small.latent[n] for n in sorted(small.latent)], 1)
    key_large = np.stack([large.latent[n] for n in sorted(large.latent)], 1)
    lookup = {row.tobytes(): logit for row, logit in zip(key_large, large.logits, strict=True)}
    common = [(row.tobytes(), logit) for row, logit in zip(key, small.logits, strict=True)
              if row.tobytes() in lookup]  # fmt: skip
    for k, logit in common:
        assert np.isclose(lookup[k], logit)
    other = generate("criteo", 500, seed=4)
    assert not np.allclose(other.logits, small.logits)


def test_kdd12_ids_exceed_int64():
    table = generate("kdd12", 2000, seed=0).table
    urls = [int(v) for v in table.column("DisplayURL").to_pylist()]
    assert max(urls) > 2**63 - 1
