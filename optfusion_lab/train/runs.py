"""Runs over seeds and their files: fit once per seed, summarise, write and load run directories.

Run directory (:func:`fit_seeds` with ``out_dir``)::

    RUN_DIR/model.pt            best weights of the first seed (a plain state_dict)
    RUN_DIR/seed_<s>/model.pt   best weights of every seed, when there is more than one
    RUN_DIR/history.csv         one row per (seed, epoch); rewritten after every epoch
    RUN_DIR/seeds.csv           one row per seed (the tidy frame of the SeedsResult)
    RUN_DIR/result.json         model, data, configs, versions, and mean/std/per_seed metrics
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from optfusion_lab import __version__
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.io import TRAINING_RUN, claim_output_folder, write_atomic, write_json
from optfusion_lab.models import ModelConfig, build_model

from .checkpoint import seed_everything
from .config import HISTORY_COLUMNS, SUMMARY_METRICS, TrainConfig
from .events import Callback, EventStream, TrainState
from .loop import FitResult, fit
from .run_config import RunConfig


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the *sample* std (ddof=1), 0.0 for one value
    (NaN mean and std for none)."""
    per_seed = [v.item() if isinstance(v, np.generic) else v for v in values]
    array = np.asarray(per_seed, dtype=np.float64)
    if len(array) == 0:
        return {"mean": math.nan, "std": math.nan, "per_seed": []}
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "per_seed": per_seed}


@dataclass
class SeedsResult:
    """What :func:`fit_seeds` (and ``run_seeds``, ``retrain``) return.

    ``models[i]`` holds seed ``seeds[i]``'s best weights (on the CPU) and ``results[i]`` its
    :class:`FitResult` (``results[i].history``: its epochs). When a run is stopped, the seed it
    stopped in is the last one; ``summary`` covers the finished seeds only. Unpacks as
    ``frame, summary = fit_seeds(...)``.
    """

    seeds: list[int]  # the seeds that ran, in order (a stop leaves out the later ones)
    requested_seeds: list[int]
    models: list[nn.Module]
    results: list[FitResult]
    frame: pd.DataFrame  # one row per seed that ran (FitResult.scalars() and "seed")
    summary: dict[str, dict]  # SUMMARY_METRICS over the finished seeds: {"mean", "std", ...}

    @property
    def stopped(self) -> bool:
        return any(r.stopped for r in self.results)

    @property
    def stop_reason(self) -> str:
        return next((r.stop_reason for r in self.results if r.stopped), "")

    @property
    def finished_seeds(self) -> list[int]:
        """The seeds whose fit ended by itself (the summary covers these)."""
        return [s for s, r in zip(self.seeds, self.results, strict=True) if not r.stopped]

    @property
    def history(self) -> pd.DataFrame:
        """Every seed's epochs in one frame (``seed`` + HISTORY_COLUMNS)."""
        return seed_histories(self.seeds, self.results)

    def __iter__(self):
        return iter((self.frame, self.summary))


def run_seeds(
    model_name: str,
    model_cfg: ModelConfig,
    data: PreparedData,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    callbacks: EventStream | Sequence[Callback] = (),
    metadata: Mapping | None = None,
) -> SeedsResult:
    """Build and fit the baseline ``model_name`` once per seed; see :func:`fit_seeds`.

    ``run = run_seeds("dcn", ModelConfig(embed_dim=4), data, TrainConfig(), seeds=[0, 1, 2])``
    """
    return fit_seeds(
        lambda: build_model(model_name, data.num_features, data.num_fields, model_cfg),
        {"model": model_name, "model_config": asdict(model_cfg)},
        data,
        train_cfg,
        seeds,
        out_dir,
        callbacks,
        metadata,
    )


def fit_seeds(
    build: Callable[[], nn.Module],
    description: Mapping,
    data: PreparedData,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    callbacks: EventStream | Sequence[Callback] = (),
    metadata: Mapping | None = None,
) -> SeedsResult:
    """Build a model with ``build()`` and fit it once per seed; return a :class:`SeedsResult`.

    ``run = fit_seeds(lambda: MyModel(data.num_features, data.num_fields), {"model": "mine",
    "model_config": {}}, data, TrainConfig(), seeds=[0, 1])``

    For each seed ``s``: every RNG is seeded with ``s``, a fresh model is built, and
    :func:`fit` runs with ``train_cfg`` whose ``seed`` is replaced by ``s``. The frame has one
    row per seed; the summary maps each of ``SUMMARY_METRICS`` to ``{"mean", "std", "per_seed"}``
    (sample std, ddof=1; 0.0 for a single seed). A stop (a callback's request or Ctrl-C) ends
    the seed it happens in and starts no further seed; the summary then covers the finished
    seeds only, and result.json says so. With ``out_dir``, the run directory described in the
    module docstring is written (history.csv after every epoch); ``description`` (at least
    ``model`` and ``model_config``) and ``metadata`` go into result.json as they are.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    out = claim_output_folder(out_dir, TRAINING_RUN) if out_dir is not None else None
    stream = EventStream.of(callbacks)
    log = EpochLog(out / "history.csv") if out is not None else None
    results, models = [], []
    with stream.first(*([log] if log is not None else [])):
        for i, seed in enumerate(seeds):
            seed_everything(seed)
            model = build()
            result = fit(model, data, dataclasses.replace(train_cfg, seed=seed), stream)
            if out is not None:
                log.finish(result.history.assign(seed=seed))
                if len(seeds) > 1:
                    save_state_dict(model.state_dict(), out / f"seed_{seed}" / "model.pt")
                if i == 0:
                    save_state_dict(model.state_dict(), out / "model.pt")
            results.append(result)
            models.append(model.to("cpu"))  # the accelerator holds one model at a time
            if result.stopped:
                break
    ran = seeds[: len(results)]
    frame, summary = summarize_seeds(ran, results)
    if out is not None:
        details = {k: v for k, v in description.items() if k not in ("model", "model_config")}
        run_cfg = RunConfig.of(data, description["model"], description["model_config"], train_cfg,
                               preset=(metadata or {}).get("preset"), **details)
        write_run(out, ran, results, run_cfg, metadata, requested_seeds=seeds)
    return SeedsResult(ran, seeds, models, results, frame, summary)


class EpochLog(Callback):
    """Rewrites a CSV of every finished epoch so far, atomically, after every epoch, so that a
    monitor in another process can follow a run (rows: ``columns`` of the finished fits, then
    the running fit's epochs with its ``seed`` and ``phase``)."""

    essential = True  # the run's own file: a failure to write it is the run's failure

    def __init__(self, path: Path, columns: Sequence[str] = ("seed", *HISTORY_COLUMNS)):
        self.path = Path(path)
        self.columns = list(columns)
        self.done: list[pd.DataFrame] = []  # the epochs of finished fits

    def on_epoch_end(self, state: TrainState) -> None:
        running = pd.DataFrame(state.history).assign(seed=state.seed, phase=state.phase)
        self.write(pd.concat([*self.done, running], ignore_index=True))

    def finish(self, history: pd.DataFrame) -> None:
        """Keep a finished fit's epochs (with whatever extra columns it needs)."""
        self.done.append(history)

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame.reindex(columns=self.columns)
        write_atomic(self.path, lambda p: frame.to_csv(p, index=False))


def summarize_seeds(seeds: Sequence[int], results: Sequence[FitResult]):
    """(per-seed frame, summary of ``SUMMARY_METRICS`` as ``{"mean", "std", "per_seed"}``);
    the summary covers the seeds whose fit was not stopped."""
    frame = pd.DataFrame([{"seed": s, **r.scalars()} for s, r in zip(seeds, results, strict=True)])
    finished = frame[~frame["stopped"].astype(bool)]
    summary = {metric: summarize(finished[metric].tolist()) for metric in SUMMARY_METRICS}
    return frame, summary


def seed_histories(seeds: Sequence[int], results: Sequence[FitResult]) -> pd.DataFrame:
    """The epochs of every seed in one frame: ``seed`` + HISTORY_COLUMNS."""
    frames = [r.history.assign(seed=s) for s, r in zip(seeds, results, strict=True)]
    return pd.concat(frames, ignore_index=True)[["seed", *HISTORY_COLUMNS]]


def write_run(
    out: Path,
    seeds: Sequence[int],
    results: Sequence[FitResult],
    run_cfg: RunConfig,
    metadata: Mapping | None = None,
    history_name: str = "history.csv",
    requested_seeds: Sequence[int] | None = None,
) -> dict:
    """Write the epoch history (``history_name``), seeds.csv, config.json and result.json of
    fitted seeds; return the result document."""
    frame, summary = summarize_seeds(seeds, results)
    history = seed_histories(seeds, results)
    write_atomic(out / history_name, lambda p: history.to_csv(p, index=False))
    write_atomic(out / "seeds.csv", lambda p: frame.to_csv(p, index=False))
    write_json(out / "config.json", run_cfg.to_dict())
    document = result_document(run_cfg, seeds, frame, summary, metadata)
    finished = [s for s, r in zip(seeds, results, strict=True) if not r.stopped]
    stop_reason = next((r.stop_reason for r in results if r.stopped), "")
    requested = list(requested_seeds) if requested_seeds is not None else list(seeds)
    document["seeds_requested"] = requested
    document["seeds_finished"] = finished
    document["stopped"] = bool(stop_reason)
    document["stop_reason"] = stop_reason
    document["summary_covers"] = f"{len(finished)} finished seed(s) of {len(requested)} requested"
    write_json(out / "result.json", document)
    return document


def result_document(
    run_cfg: RunConfig,
    seeds: Sequence[int],
    frame: pd.DataFrame,
    summary: Mapping[str, dict],
    metadata: Mapping | None = None,
) -> dict:
    """The content of result.json (see :func:`fit_seeds`): the run configuration's header, then
    the seeds' metrics."""
    import sklearn

    return {
        **run_cfg.header(),
        "seeds": list(seeds),
        "device": str(frame["device"].iloc[0]),
        "num_parameters": int(frame["num_parameters"].iloc[0]),
        "best_epoch": [int(e) for e in frame["best_epoch"]],
        **{metric: dict(summary[metric]) for metric in SUMMARY_METRICS},
        "std_convention": "sample standard deviation over seeds (ddof=1); 0.0 for one seed",
        "versions": {
            "optfusion_lab": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
        },
        "metadata": dict(metadata) if metadata else {},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Save a state_dict (moved to CPU) atomically; ``torch.load(weights_only=True)`` reads it."""
    cpu_state = {k: v.detach().cpu() for k, v in state.items()}
    write_atomic(Path(path), lambda p: torch.save(cpu_state, p))


def model_config_from_dict(values: Mapping) -> ModelConfig:
    """Rebuild a ModelConfig from ``asdict`` output read back from JSON (lists -> tuples)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields {unknown}")
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_run_model(result: Mapping) -> nn.Module:
    """A fresh model of the kind a run's result.json describes: a baseline, or the derived
    OptFusion model of a ``retrain`` run (``optfusion-hard`` / ``optfusion-soft``)."""
    num_features, num_fields = int(result["num_features"]), int(result["num_fields"])
    if result["model"] in ("optfusion-hard", "optfusion-soft"):
        from optfusion_lab.models.genotype import Genotype
        from optfusion_lab.models.supernet import FusionNetwork

        config = result["model_config"]
        genotype = Genotype.from_dict(config["genotype"])
        return FusionNetwork.from_genotype(genotype, num_features, num_fields, config["selection"])
    return build_model(result["model"], num_features, num_fields,
                       model_config_from_dict(result["model_config"]))


def load_run(
    run_dir: str | Path, seed: int | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """The trained model of a run directory (eval mode, on ``device``) and its result.json.

    ``model, result = load_run("runs/train/criteo-dcn", seed=1)``

    ``seed`` None loads ``model.pt`` (the first seed); otherwise ``seed_<seed>/model.pt``.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no result.json)")
    result = json.loads(result_path.read_text())
    if seed is None or (len(result["seeds"]) == 1 and seed == result["seeds"][0]):
        weights = run_dir / "model.pt"
    elif seed in result["seeds"]:
        weights = run_dir / f"seed_{seed}" / "model.pt"
    else:
        raise ValueError(f"{run_dir}: no seed {seed}; the run has seeds {result['seeds']}")
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: {weights.relative_to(run_dir)} missing")
    model = build_run_model(result)
    state = torch.load(weights, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, result
