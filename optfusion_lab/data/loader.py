"""Mini-batches over prepared arrays: whole-tensor indexing, no per-sample Python.

The arrays of a split are loaded into one tensor each. Every epoch draws a seeded permutation
(``seed + epoch``), so a run is reproducible and a resumed run sees the same order; with
``shuffle=False`` batches follow the stored order (the reference's unshuffled order). For
distributed training each rank takes every ``world_size``-th index of the permutation, after
trimming it to a multiple of ``world_size`` so that all ranks run the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class BatchLoader:
    """Iterate (features (B, F) int32, labels (B,) float32) batches of one split."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        on_device: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.device = torch.device(device)
        # on_device: keep the whole split on the accelerator (fast when it fits in its memory).
        home = self.device if on_device else torch.device("cpu")
        # One copy into memory (memory-mapped splits are read-only and must not be written).
        self.features = torch.from_numpy(np.array(features, np.int32, order="C")).to(home)
        self.labels = torch.from_numpy(np.array(labels, np.float32)).to(home)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._pin = self.device.type == "cuda" and home.type == "cpu"

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the next pass (call before iterating, as with DDP)."""
        self.epoch = epoch

    @property
    def num_rows(self) -> int:
        """Rows this rank sees per epoch."""
        return (len(self.labels) // self.world_size) if self.world_size > 1 else len(self.labels)

    def __len__(self) -> int:
        n = self.num_rows
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _indices(self) -> torch.Tensor | None:
        n = len(self.labels)
        if not self.shuffle and self.world_size == 1:
            return None  # contiguous slices, no gather
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        usable = n - n % self.world_size
        return order[self.rank : usable : self.world_size].to(self.features.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        n = self.num_rows
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, n)
            if indices is None:
                x, y = self.features[start:end], self.labels[start:end]
            else:
                batch = indices[start:end]
                x, y = self.features.index_select(0, batch), self.labels.index_select(0, batch)
            if self._pin:
                x, y = x.pin_memory(), y.pin_memory()
            yield (
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
            )
