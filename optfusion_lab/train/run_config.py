"""One run configuration, composed of one part per concern.

:class:`RunConfig` is the one source of a run directory's ``config.json``, of the fingerprint a
resumed run must match, and of the header of ``result.json``; nothing else rebuilds them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optfusion_lab.data.dataset import PreparedData

from .config import TrainConfig

RESULT_FORMAT_VERSION = 1
# TrainConfig fields that change how a run is shown or where it runs, never its result: a
# resumed run may change them.
PRESENTATION_FIELDS = ("progress", "threads", "device", "log_every", "compile",
                       "keep_freed_memory")
# Options added after runs were already being written, each with the value every run written
# before it had (the option's default, which reproduces the older behaviour exactly): a stored
# fingerprint without one of them still matches a current fingerprint at that value.
ADDED_OPTIONS = {
    "train": {"embedding_update": "dense"},
    "search": {"settle_steps": None},
    "model_config": {"regulation_eps": 1e-5},
}


def fingerprints_match(stored: Mapping, now: Mapping) -> bool:
    """Whether a stored run's fingerprint matches ``now``'s, reading an option of
    :data:`ADDED_OPTIONS` that the stored one lacks as its value from before it existed."""
    return _completed(stored, now) == dict(now)


def fingerprint_differences(stored: Mapping, now: Mapping) -> list[str]:
    """The top-level fingerprint keys that differ (after :func:`fingerprints_match`'s reading)."""
    stored = _completed(stored, now)
    return sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))


def _completed(stored: Mapping, now: Mapping) -> dict:
    stored = {k: dict(v) if isinstance(v, Mapping) else v for k, v in stored.items()}
    for section, options in ADDED_OPTIONS.items():
        if isinstance(stored.get(section), dict) and isinstance(now.get(section), Mapping):
            for name, before in options.items():
                if name not in stored[section] and now[section].get(name, None) == before:
                    stored[section][name] = before
    return stored


def _plain(value: Any) -> Any:
    """A dataclass or mapping as plain JSON values (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return json.loads(json.dumps(value)) if value is not None else None


@dataclass(frozen=True)
class RunConfig:
    """What a run depends on: its data, its model, how it trains and, for a search, how it
    searches.

    ``run_cfg = RunConfig.of(data, "dcn", ModelConfig(), TrainConfig(), preset="criteo")``
    """

    data: Mapping  # dataset, data_dir, data_source_sha256, num_fields, num_features
    model: str  # a baseline's name, "optfusion-supernet", "optfusion-hard" or "optfusion-soft"
    model_config: Mapping  # the model's configuration, as plain values
    train: TrainConfig
    search: Mapping | None = None  # the SearchConfig of a search, as plain values
    preset: str | None = None  # the preset the defaults came from
    details: Mapping = dataclasses.field(default_factory=dict)  # e.g. {"init": "warm-start"}

    @classmethod
    def of(cls, data: PreparedData, model: str, model_config: Any, train: TrainConfig,
           search: Any = None, preset: str | None = None, **details) -> RunConfig:  # fmt: skip
        """Compose a run configuration (configs may be dataclasses or mappings)."""
        described = {
            "dataset": data.meta["dataset"],
            "data_dir": str(Path(data.directory).resolve()),
            "data_source_sha256": data.meta.get("source", {}).get("sha256"),
            "num_fields": data.num_fields,
            "num_features": data.num_features,
        }
        return cls(described, model, _plain(model_config), train, _plain(search), preset,
                   _plain(details))  # fmt: skip

    def with_seed(self, seed: int) -> RunConfig:
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))

    def fingerprint(self) -> dict:
        """What a resumed run must share with its checkpoint: the data's identity and every
        option that changes the result (not the data's path, nor PRESENTATION_FIELDS)."""
        train = {k: v for k, v in asdict(self.train).items() if k not in PRESENTATION_FIELDS}
        return _plain({
            "data_sha256": self.data["data_source_sha256"],
            "num_features": self.data["num_features"],
            "num_fields": self.data["num_fields"],
            "model": self.model,
            "model_config": self.model_config,
            "train": train,
            "search": self.search,
        })  # fmt: skip

    def to_dict(self) -> dict:
        """The content of ``config.json``."""
        return _plain({
            **self.data,
            "model": self.model,
            "model_config": self.model_config,
            "train": asdict(self.train),
            "search": self.search,
            "preset": self.preset,
            **self.details,
            "fingerprint": self.fingerprint(),
        })  # fmt: skip

    def header(self) -> dict:
        """The first fields of ``result.json``."""
        search = {"search_config": self.search} if self.search is not None else {}
        return _plain({
            "format_version": RESULT_FORMAT_VERSION,
            "model": self.model,
            "model_config": self.model_config,
            **self.details,
            **search,
            **self.data,
            "train_config": asdict(self.train),
        })  # fmt: skip
