"""Experiments the course notebooks share: data, models over seeds, cached searches, tidy frames.

A notebook imports, explains, runs and asserts; whatever it needs twice lives here:

- :func:`sample_path` and :func:`prepared_data`: the embedded samples (or any raw file),
  prepared once into an output folder (``prepare`` reuses a complete, identical preparation).
- :func:`train_baselines` and :func:`train_genotypes`: hand-made baselines, or derived models of
  genotypes, trained once per seed; one tidy frame with a row per (model, seed).
- :func:`search_run`: a search whose run directory is reused when it holds the same search (its
  fingerprint), so a later notebook reads what an earlier one wrote, or recomputes it.
- :func:`search_and_retrain`: the ablation unit (search with a seed, retrain its genotype with
  the same seed), as tidy rows.
- :func:`summarize_runs`: mean, sample std, standard error and count per group of a tidy frame.
- :func:`design_genotype`: the hand-made stacked and parallel designs as genotypes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .data import PrepareConfig, prepare
from .data.dataset import PreparedData
from .data.synthetic import SAMPLES
from .data.teacher import TEACHER_GENOTYPE_FILE, TEACHER_SAMPLE
from .io import write_csv, write_json
from .names import DATASETS, DESIGNS, OPERATIONS

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data_samples"
COURSE_DATASETS = (*DATASETS, "teacher")  # "teacher": the KDD12 layout, labels from a known fusion
# Columns of the per-seed frames of train_baselines / train_genotypes (plus "model" first).
RUN_COLUMNS = ("seed", "test_auc", "test_logloss", "best_valid_auc", "best_epoch", "epochs_run",
               "train_seconds", "num_parameters")


# --------------------------------------------------------------------------- data


def sample_path(dataset: str, samples_dir: str | Path | None = None) -> Path:
    """The embedded sample file of ``dataset`` (criteo, avazu, kdd12 or teacher) in
    ``samples_dir`` (default: the repository's ``data_samples/``)."""
    if dataset not in COURSE_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(COURSE_DATASETS)}")
    name = TEACHER_SAMPLE[0] if dataset == "teacher" else SAMPLES[dataset][0]
    path = Path(samples_dir or SAMPLES_DIR) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: embedded sample missing (run `make samples`)")
    return path


def teacher_genotype_path() -> Path:
    """The stated genotype the teacher sample's labels were drawn from."""
    return SAMPLES_DIR / TEACHER_GENOTYPE_FILE


def prepared_data(dataset: str, out_dir: str | Path, data_path: str | Path | None = None,
                  samples_dir: str | Path | None = None):
    """``data_path`` (default: the embedded sample in ``samples_dir``, see :func:`sample_path`)
    prepared into ``out_dir``; a PreparedData.

    ``dataset`` "teacher" is prepared with the KDD12 schema. A second call with the same file
    and options reuses the folder (see :func:`optfusion_lab.data.prepare`).
    """
    raw = Path(data_path) if data_path else sample_path(dataset, samples_dir)
    schema = "kdd12" if dataset == "teacher" else dataset
    prepare(raw, out_dir, PrepareConfig(schema))
    return PreparedData.open(out_dir)


# --------------------------------------------------------------------------- training over seeds


def baseline_configs(data: PreparedData, model: str, *, preset: str = "tiny",
                     embed_dim: int | None = None, epochs: int | None = None,
                     batch_size: int | None = None, device: str = "auto",
                     threads: int | None = None):
    """(ModelConfig, TrainConfig) of baseline ``model`` from ``preset``, with sizes replaced
    (None keeps the preset's) and progress bars off."""
    from .presets import get_preset, resolve_preset, with_sizes

    model_cfg, train_cfg = resolve_preset(with_sizes(get_preset(preset), embed_dim=embed_dim),
                                          model, data.meta)
    changes = {"device": device, "threads": threads, "progress": False}
    if epochs is not None:
        changes["epochs"] = epochs
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return model_cfg, dataclasses.replace(train_cfg, **changes)


def _tidy(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    frame = frame[list(RUN_COLUMNS)].copy()
    frame.insert(0, "model", model)
    return frame


def train_baselines(
    data: PreparedData,
    models: Sequence[str],
    seeds: Sequence[int],
    *,
    preset: str = "tiny",
    embed_dim: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> pd.DataFrame:
    """Train every baseline of ``models`` once per seed; one row per (model, seed).

    Sizes and learning rates come from ``preset`` (see :func:`baseline_configs`); columns are
    ``model`` and :data:`RUN_COLUMNS`.
    """
    from .train import run_seeds

    frames = []
    for model in models:
        model_cfg, train_cfg = baseline_configs(data, model, preset=preset, embed_dim=embed_dim,
                                                epochs=epochs, batch_size=batch_size,
                                                device=device, threads=threads)
        frame, _ = run_seeds(model, model_cfg, data, train_cfg, seeds)
        frames.append(_tidy(frame, model))
    return pd.concat(frames, ignore_index=True)


def train_genotypes(
    data: PreparedData,
    genotypes: Mapping[str, object],
    seeds: Sequence[int],
    train_cfg,
    *,
    selection: str = "hard",
    warm_start: Mapping | None = None,
) -> pd.DataFrame:
    """Train the derived model of every genotype (name -> Genotype) once per seed, from scratch
    or warm-started from a supernet state dict; one row per (model, seed), as
    :func:`train_baselines`."""
    from .fusion_search import retrain

    frames = []
    for name, genotype in genotypes.items():
        frame, _ = retrain(data, genotype, train_cfg, seeds, selection=selection,
                           warm_start=warm_start)
        frames.append(_tidy(frame, name))
    return pd.concat(frames, ignore_index=True)


def summarize_runs(
    frame: pd.DataFrame,
    by: str | Sequence[str] = "model",
    metrics: Sequence[str] = ("test_auc", "test_logloss"),
) -> pd.DataFrame:
    """Per group of ``by``: ``<metric>_mean``, ``<metric>_std`` (sample std, ddof=1; 0 for one
    run), ``<metric>_sem`` (std / sqrt(n)) and ``n``, groups in order of first appearance."""
    keys = [by] if isinstance(by, str) else list(by)
    grouped = frame.groupby(keys, sort=False)
    out = grouped.size().rename("n").reset_index()
    for metric in metrics:
        stats = grouped[metric].agg(["mean", "std"]).reset_index(drop=True)
        out[f"{metric}_mean"] = stats["mean"].to_numpy()
        out[f"{metric}_std"] = stats["std"].fillna(0.0).to_numpy()
        out[f"{metric}_sem"] = out[f"{metric}_std"] / out["n"].map(math.sqrt)
    return out


# --------------------------------------------------------------------------- designs


def design_genotype(design: str, num_fields: int, embed_dim: int, *, num_layers: int = 3,
                    shallow: str = "cross", out_operation: str = "concat",
                    operation: str = "add"):
    """The hand-made ``design`` (parallel or stacked) as a genotype of the fusion graph.

    Its edges are the design's; OUT fuses with ``out_operation`` (the classic parallel design
    concatenates), every other node with ``operation`` (a node of a chain has one input, where
    ADD is the identity).
    """
    from .models.genotype import DESIGNS as DESIGN_EDGES
    from .models.genotype import FusionGraph, Genotype

    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {list(DESIGNS)}")
    operations = OPERATIONS
    graph = FusionGraph(num_layers)
    edges = set(DESIGN_EDGES[design](graph))
    alpha = [1.0 if e in edges else -1.0 for e in graph.edges]
    beta = [[1.0 if op == (out_operation if node == "OUT" else operation) else 0.0
             for op in operations] for node in graph.fusion_nodes]
    return Genotype.from_arch(num_fields=num_fields, embed_dim=embed_dim, num_layers=num_layers,
                              shallow=shallow, operations=operations, alpha=alpha,
                              beta=beta)


# --------------------------------------------------------------------------- searches


def search_configs(
    *,
    preset: str = "tiny",
    embed_dim: int | None = None,
    num_layers: int | None = None,
    shallow: str = "cross",
    operations: Sequence[str] | None = None,
    alpha_init: float = 0.5,
    arch_lr: float | None = None,
    algorithm: str = "one-shot",
    epochs: int | None = None,
    batch_size: int | None = None,
    history_every: int = 20,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
):
    """(SupernetConfig, TrainConfig, SearchConfig) of a search from the search ``preset``
    (see :data:`optfusion_lab.presets.SEARCH_PRESETS`); None keeps the preset's value."""
    from .fusion_search import SearchConfig
    from .models.supernet import SupernetConfig
    from .presets import get_search_preset
    from .train import TrainConfig

    p = get_search_preset(preset)
    supernet_cfg = SupernetConfig(
        embed_dim=embed_dim or p.embed_dim,
        num_layers=num_layers or p.num_layers,
        shallow=shallow,
        operations=tuple(operations or OPERATIONS),
        alpha_init=alpha_init,
    )
    train_cfg = TrainConfig(epochs=epochs or p.epochs, batch_size=batch_size or p.batch_size,
                            lr_emb=p.lr, l2_emb=p.l2, lr_nn=p.lr, l2_nn=p.l2, seed=seed,
                            device=device, threads=threads, progress=False)
    search_cfg = SearchConfig(arch_lr=arch_lr or p.arch_lr, history_every=history_every,
                              algorithm=algorithm)
    return supernet_cfg, train_cfg, search_cfg


def retrain_config(search_train_cfg, *, preset: str = "tiny", selection: str = "hard",
                   warm_start: bool = False, epochs: int | None = None):
    """The TrainConfig of retraining a derived model after a search with ``search_train_cfg``.

    The learning rate and L2 are the preset's: hard selection takes ``retrain_hard``; soft
    selection warm-started takes ``retrain_soft`` (the reference's tiny rates only fine-tune);
    soft selection from scratch takes ``retrain_hard`` too, since a fresh model must learn.
    """
    from .presets import get_search_preset

    p = get_search_preset(preset)
    lr, l2 = p.retrain_soft if (selection == "soft" and warm_start) else p.retrain_hard
    changes = {"lr_emb": lr, "l2_emb": l2, "lr_nn": lr, "l2_nn": l2}
    if epochs is not None:
        changes["epochs"] = epochs
    return dataclasses.replace(search_train_cfg, **changes)


@dataclass
class SearchRun:
    """A search run directory read back: what later notebooks need from a search."""

    directory: Path
    genotype: object  # the derived Genotype
    history: pd.DataFrame  # tidy alpha / operation-weight history (search.HISTORY_COLUMNS)
    epochs: pd.DataFrame  # per-epoch metrics of every phase
    result: dict  # result.json
    reused: bool  # True when the folder already held this search

    def supernet_state(self) -> dict:
        """The best epoch's supernet weights (for warm-started retraining)."""
        import torch

        return torch.load(self.directory / "supernet.pt", map_location="cpu", weights_only=True)


def read_search_run(out_dir: str | Path, reused: bool = True) -> SearchRun:
    """The search run written in ``out_dir`` by
    :func:`optfusion_lab.fusion_search.write_search_run`."""
    from .models.genotype import Genotype

    out = Path(out_dir)
    history = pd.read_csv(out / "history.csv", keep_default_na=False,
                          dtype={"node": str, "input": str, "operation": str})
    history["value"] = history["value"].astype(float)
    return SearchRun(out, Genotype.load(out / "genotype.json"), history,
                     pd.read_csv(out / "epochs.csv"),
                     json.loads((out / "result.json").read_text()), reused)


def search_run(
    out_dir: str | Path,
    data: PreparedData,
    supernet_cfg,
    train_cfg,
    search_cfg,
    *,
    listeners: Sequence[Callable[[pd.DataFrame], None]] = (),
    callbacks: Sequence = (),
    reuse_from: Sequence[str | Path] = (),
) -> SearchRun:
    """The search of these settings: read back from the first of ``reuse_from`` and ``out_dir``
    that holds it finished (same data and options: the search fingerprint; not stopped);
    otherwise run and written into ``out_dir``. So a notebook reads what an earlier one wrote,
    or recomputes it."""
    from .fusion_search import search, search_fingerprint, write_search_run
    from .train import fingerprints_match

    out = Path(out_dir)
    fingerprint = search_fingerprint(data, supernet_cfg, train_cfg, search_cfg)
    for folder in [*map(Path, reuse_from), out]:
        config, written = folder / "config.json", folder / "result.json"
        if config.is_file() and written.is_file():
            # A stopped search (its Stop button, Ctrl-C) is shown but never reused.
            if (fingerprints_match(json.loads(config.read_text()).get("fingerprint") or {},
                                   fingerprint)
                    and not json.loads(written.read_text()).get("stopped")):
                return read_search_run(folder, reused=True)
    result = search(data, supernet_cfg, train_cfg, search_cfg, callbacks=callbacks,
                    listeners=listeners)
    write_search_run(out, result, data, supernet_cfg, train_cfg, search_cfg)
    return read_search_run(out, reused=False)


def search_and_retrain(
    data: PreparedData,
    supernet_cfg,
    search_cfg,
    search_train_cfg,
    retrain_cfgs: Mapping[str, object],
    seeds: Sequence[int],
    *,
    truth=None,
) -> tuple[pd.DataFrame, list]:
    """Per seed: search, then retrain the genotype from scratch with the same seed, once per
    selection of ``retrain_cfgs`` (``{"hard": TrainConfig, "soft": TrainConfig}``, see
    :func:`retrain_config`). Returns (tidy frame, genotypes in seed order).

    One row per (seed, selection): the supernet's ``search_test_auc``, the retrained model's
    ``test_auc`` / ``test_logloss``, ``search_seconds``, the number of live edges and, with
    ``truth`` (a Genotype), the :func:`~optfusion_lab.models.teacher.score_genotype` figures.
    """
    from .fusion_search import retrain, search
    from .models.teacher import score_genotype

    rows, genotypes = [], []
    for seed in seeds:
        found = search(data, supernet_cfg, dataclasses.replace(search_train_cfg, seed=seed),
                       search_cfg)
        genotypes.append(found.genotype)
        score = score_genotype(found.genotype, truth).to_dict() if truth is not None else {}
        for selection, retrain_cfg in retrain_cfgs.items():
            frame, _ = retrain(data, found.genotype, retrain_cfg, [seed], selection=selection)
            rows.append({
                "seed": seed,
                "selection": selection,
                "search_test_auc": found.fit.test_auc,
                "test_auc": float(frame["test_auc"].iloc[0]),
                "test_logloss": float(frame["test_logloss"].iloc[0]),
                "search_seconds": found.search_seconds,
                "live_edges": len(found.genotype.live_edges()),
                **score,
            })
    return pd.DataFrame(rows), genotypes


def search_variants(
    data: PreparedData,
    variants: Mapping[str, tuple],
    search_train_cfg,
    retrain_cfgs: Mapping[str, object],
    seeds: Sequence[int],
    *,
    truth=None,
    out_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, list]]:
    """:func:`search_and_retrain` for every variant ``name -> (SupernetConfig, SearchConfig)``;
    returns the tidy frames joined with a ``variant`` column first, and the genotypes per
    variant in seed order.

    With ``out_dir``, the frame (``variants.csv``), the genotypes (``genotypes/<variant>_seed<s>
    .json``) and the key of the experiment (``variants.key.json``: data, every config, seeds)
    are written there, and a later call with the same key reads them back instead of running.
    """
    from .models.genotype import Genotype

    seeds = [int(s) for s in seeds]
    key = json.loads(json.dumps({
        "data_sha256": data.meta.get("source", {}).get("sha256"),
        "num_features": data.num_features,
        "variants": {name: [dataclasses.asdict(c) for c in cfgs]
                     for name, cfgs in variants.items()},
        "search_train": dataclasses.asdict(search_train_cfg),
        "retrain": {k: dataclasses.asdict(c) for k, c in retrain_cfgs.items()},
        "seeds": seeds,
        "truth": truth.to_dict() if truth is not None else None,
    }))
    out = Path(out_dir) if out_dir is not None else None

    def genotype_path(name: str, seed: int) -> Path:
        return out / "genotypes" / f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}_seed{seed}.json"

    stored = out / "variants.key.json" if out is not None else None
    if stored is not None and stored.is_file() and (out / "variants.csv").is_file():
        if json.loads(stored.read_text()) == key:
            frame = pd.read_csv(out / "variants.csv")
            return frame, {name: [Genotype.load(genotype_path(name, s)) for s in seeds]
                           for name in variants}

    frames, genotypes = [], {}
    for name, (supernet_cfg, search_cfg) in variants.items():
        frame, genotypes[name] = search_and_retrain(data, supernet_cfg, search_cfg,
                                                    search_train_cfg, retrain_cfgs, seeds,
                                                    truth=truth)
        frame.insert(0, "variant", name)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if out is not None:
        for name, found in genotypes.items():
            for seed, genotype in zip(seeds, found, strict=True):
                genotype_path(name, seed).parent.mkdir(parents=True, exist_ok=True)
                genotype.save(genotype_path(name, seed))
        write_csv(out / "variants.csv", frame)
        write_json(out / "variants.key.json", key)
    return frame, genotypes

