"""A prepared dataset directory (the output of ``optfusion-lab prepare``), read without torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED_META_KEYS = ("dataset", "field_names", "num_fields", "num_features", "splits", "num_rows")


@dataclass(frozen=True)
class PreparedData:
    """Meta data and memory-mapped arrays of a prepared dataset."""

    directory: Path
    meta: dict

    @classmethod
    def open(cls, directory: str | Path) -> PreparedData:
        """Open ``directory``; a missing or incomplete dataset is a clear error."""
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{directory}: not a prepared dataset (no meta.json); "
                "run `optfusion-lab prepare` first"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise ValueError(f"{meta_path}: unreadable meta.json ({exc})") from exc
        missing = [k for k in REQUIRED_META_KEYS if k not in meta]
        if missing:
            raise ValueError(f"{meta_path}: incomplete meta.json, missing {missing}")
        data = cls(directory, meta)
        for split in meta["splits"]:
            for path in data._paths(split):
                if not path.is_file():
                    raise FileNotFoundError(f"{directory}: incomplete dataset, {path.name} missing")
        return data

    def _paths(self, split: str) -> list[Path]:
        paths = [self.directory / f"X_{split}.npy"]
        if self.meta.get("labelled", True):
            paths.append(self.directory / f"y_{split}.npy")
        return paths

    @property
    def num_fields(self) -> int:
        return int(self.meta["num_fields"])

    @property
    def num_features(self) -> int:
        return int(self.meta["num_features"])

    @property
    def field_names(self) -> list[str]:
        return list(self.meta["field_names"])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Memory-mapped features (n, F) int32 and labels (n,) float32 (None if unlabelled)."""
        if split not in self.meta["splits"]:
            raise KeyError(f"{self.directory}: no split {split!r}; has {self.meta['splits']}")
        x = np.load(self.directory / f"X_{split}.npy", mmap_mode="r")
        y = None
        if self.meta.get("labelled", True):
            y = np.load(self.directory / f"y_{split}.npy", mmap_mode="r")
        return x, y
