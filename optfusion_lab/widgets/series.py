"""Fixed-size buffers of a run's snapshots: what the monitor plots, at a cost independent of length.

A search of a few thousand steps gives thousands of alpha snapshots, each a vector of one value
per edge. A plot needs a few hundred points per line to look right, so :class:`SnapshotBuffer`
keeps at most ``capacity`` snapshots: when it is full, every other snapshot is dropped and only
every ``stride``-th new one is kept from then on. The kept snapshots stay evenly spread over the
whole history, appending is O(1) amortised, and redrawing sends at most ``capacity`` points per
line however long the run is. The latest snapshot is always shown, kept or not.
"""

from __future__ import annotations

import numpy as np


class SnapshotBuffer:
    """At most ``capacity`` snapshots (a step and one value per line) spread over the history."""

    def __init__(self, width: int, capacity: int = 256):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if capacity < 4 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 4, got {capacity}")
        self.width = width
        self.capacity = capacity
        self.stride = 1  # keep every stride-th snapshot offered
        self.offered = 0  # snapshots offered so far
        self._steps = np.empty(capacity, dtype=np.float64)  # (capacity,)
        self._values = np.empty((capacity, width), dtype=np.float64)  # (capacity, width)
        self._kept = 0
        self._last: tuple[float, np.ndarray] | None = None
        self._last_kept = False

    def __len__(self) -> int:
        """Snapshots offered so far (not only those kept)."""
        return self.offered

    def append(self, step: float, values) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)  # (width,)
        if values.shape[0] != self.width:
            raise ValueError(f"a snapshot has {self.width} values, got {values.shape[0]}")
        self._last, self._last_kept = (float(step), values), False
        if self.offered % self.stride == 0:
            self._steps[self._kept] = step
            self._values[self._kept] = values
            self._kept += 1
            self._last_kept = True
            if self._kept == self.capacity:  # full: keep every other snapshot, halve the rate
                half = self.capacity // 2
                self._steps[:half] = self._steps[0 : self.capacity : 2]
                self._values[:half] = self._values[0 : self.capacity : 2]
                self._kept, self.stride = half, self.stride * 2
                self._last_kept = False  # it was at an odd position, now dropped
        self.offered += 1

    def arrays(self, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps (n,), values (n, width)) of the kept snapshots plus the latest one.

        ``max_points`` thins them further (evenly, the latest snapshot always included), e.g.
        for a static figure stored in a notebook.
        """
        steps, values = self._steps[: self._kept], self._values[: self._kept]
        if self._last is not None and not self._last_kept:
            steps = np.append(steps, self._last[0])  # (n + 1,)
            values = np.vstack([values, self._last[1][None, :]])  # (n + 1, width)
        if max_points is not None and len(steps) > max_points:
            keep = np.unique(np.linspace(0, len(steps) - 1, max_points).round().astype(int))
            steps, values = steps[keep], values[keep]
        return steps.copy(), values.copy()
