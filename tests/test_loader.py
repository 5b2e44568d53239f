"""The batch loader: seeded shuffles, full coverage, sharding, order without shuffle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optfusion_lab.data.loader import BatchLoader


def make(n=103, f=3):
    x = np.arange(n * f, dtype=np.int32).reshape(n, f)
    y = (np.arange(n) % 2).astype(np.float32)
    return x, y


def rows_seen(loader) -> list[int]:
    return [int(r) for xb, _ in loader for r in xb[:, 0] // 3]


def test_batches_cover_every_row_once_with_matching_labels():
    x, y = make()
    loader = BatchLoader(x, y, batch_size=10, seed=1)
    seen = []
    for xb, yb in loader:
        assert xb.dtype == torch.int32 and yb.dtype == torch.float32
        rows = (xb[:, 0] // 3).numpy()
        assert np.array_equal(yb.numpy(), y[rows])
        seen += rows.tolist()
    assert sorted(seen) == list(range(103)) and len(loader) == 11


def test_shuffle_is_seeded_and_changes_per_epoch():
    x, y = make()
    a, b = BatchLoader(x, y, 10, seed=1), BatchLoader(x, y, 10, seed=1)
    first = rows_seen(a)
    assert first == rows_seen(b)
    assert first != list(range(103))
    a.set_epoch(1)
    assert rows_seen(a) != first
    assert rows_seen(BatchLoader(x, y, 10, seed=2)) != first


def test_no_shuffle_keeps_stored_order_and_drop_last():
    x, y = make()
    assert rows_seen(BatchLoader(x, y, 10, shuffle=False)) == list(range(103))
    loader = BatchLoader(x, y, 10, shuffle=False, drop_last=True)
    assert len(loader) == 10 and rows_seen(loader) == list(range(100))


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    x, y = make()
    shards = [BatchLoader(x, y, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    seen = [rows_seen(s) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 51 and len(shards[0]) == len(shards[1])
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 102


def test_bad_arguments():
    x, y = make()
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(x, y, 0)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(x, y, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(x, y[:-1], 4)
