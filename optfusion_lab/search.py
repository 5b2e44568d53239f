"""One-shot OptFusion search, derivation and retraining.

The search is the paper's method (DESIGN.md section 3): single-level and joint. Every training
batch gives one loss and one backward pass; then the weight optimizer (Adam, embedding and
network groups, coupled L2) and the architecture optimizer (Adam over alpha and beta, ``arch_lr``,
no weight decay) both step. It *is* training with two optimizers, so it runs through
:func:`optfusion_lab.train.fit`: validation after every epoch, early stopping (patience 1 by
default), and the weights, alpha and beta of the best validation epoch are restored before the
genotype is derived. Where we differ from the reference: batches are reshuffled every epoch by
default (``TrainConfig.shuffle=False`` gives the stored order), PROD multiplies active inputs
only, and derived models prune dead nodes (see :mod:`optfusion_lab.models.supernet`).

:class:`ArchitectureHistory` records alpha and softmax(beta) every ``history_every`` steps and at
every epoch end as a tidy frame, and passes each new snapshot to listeners, so a notebook can
plot the search live without touching the loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from .data.dataset import PreparedData
from .models.genotype import DESIGNS, Genotype
from .models.supernet import FusionNetwork, SupernetConfig, supernet_state_for
from .train import (
    Callback,
    FitResult,
    JointOptimizer,
    TrainConfig,
    TrainState,
    _write_atomic,
    fit,
    fit_seeds,
    make_optimizer,
    save_state_dict,
    seed_everything,
    write_json,
    write_run,
)

HISTORY_COLUMNS = ("step", "epoch", "when", "kind", "node", "input", "operation", "value")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the search itself (the supernet and training have their own configs)."""

    arch_lr: float = 0.1  # Adam learning rate of alpha and beta (reference 0.3/0.1/0.01)
    history_every: int = 20  # record alpha/softmax(beta) every this many steps (and per epoch)
    design: str | None = None  # None: learn the edges; "parallel" or "stacked": fixed edges

    def __post_init__(self):
        if self.arch_lr <= 0:
            raise ValueError(f"arch_lr must be > 0, got {self.arch_lr}")
        if self.history_every < 1:
            raise ValueError(f"history_every must be >= 1, got {self.history_every}")
        if self.design is not None and self.design not in DESIGNS:
            raise ValueError(f"unknown design {self.design!r}; choose one of {list(DESIGNS)}")


def architecture_rows(net: FusionNetwork, step: int, epoch: int, when: str) -> list[dict]:
    """Tidy rows of the current alpha (one per edge) and softmax(beta) (one per node and op)."""
    graph = net.graph
    alpha = net.alpha.detach().cpu().tolist() if net.mode == "search" else None
    weights = net.operation_weights().detach().cpu().tolist()
    rows = []
    if alpha is not None:
        for (src, dst), a in zip(graph.edges, alpha, strict=True):
            rows.append({"step": step, "epoch": epoch, "when": when, "kind": "alpha",
                         "node": dst, "input": src, "operation": "", "value": a})  # fmt: skip
    for node, row in zip(graph.fusion_nodes, weights, strict=True):
        for op, w in zip(net.cfg.operations, row, strict=True):
            rows.append({"step": step, "epoch": epoch, "when": when, "kind": "weight",
                         "node": node, "input": "", "operation": op, "value": w})  # fmt: skip
    return rows


class ArchitectureHistory(Callback):
    """Records alpha and softmax(beta) during a search (one device-to-host copy per record).

    ``listeners`` are called with each new snapshot (a tidy DataFrame) as it is recorded.
    """

    def __init__(self, every: int, listeners: Sequence[Callable[[pd.DataFrame], None]] = ()):
        self.every = every
        self.listeners = tuple(listeners)
        self.rows: list[dict] = []

    def record(self, net: FusionNetwork, step: int, epoch: int, when: str) -> None:
        rows = architecture_rows(net, step, epoch, when)
        self.rows += rows
        if self.listeners:
            snapshot = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
            for listener in self.listeners:
                listener(snapshot)

    def on_step(self, state: TrainState) -> None:
        if state.step == 1:
            self.record(state.model, 0, state.epoch, "step")  # close to the initial state
        if state.step % self.every == 0:
            self.record(state.model, state.step, state.epoch, "step")

    def on_epoch_end(self, state: TrainState) -> None:
        self.record(state.model, state.step, state.epoch, "epoch")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))


@dataclass
class SearchResult:
    """What a search leaves: the supernet (best epoch), its genotype, histories, metrics."""

    network: FusionNetwork
    genotype: Genotype
    history: pd.DataFrame  # tidy alpha / softmax(beta) history (see HISTORY_COLUMNS)
    fit: FitResult  # epochs, validation and test metrics of the supernet at its best epoch
    search_seconds: float  # wall time of the whole search, evaluation included


def build_supernet(
    data: PreparedData, cfg: SupernetConfig, design: str | None = None
) -> FusionNetwork:
    """A search supernet for ``data``, or a fixed-edges one for a hand-made ``design``."""
    if design is None:
        return FusionNetwork(data.num_features, data.num_fields, cfg)
    from .models.genotype import FusionGraph

    edges = DESIGNS[design](FusionGraph(cfg.num_layers))
    return FusionNetwork(data.num_features, data.num_fields, cfg, mode="fixed-edges", edges=edges)


def search(
    data: PreparedData,
    supernet_cfg: SupernetConfig,
    train_cfg: TrainConfig,
    search_cfg: SearchConfig = SearchConfig(),  # noqa: B008 (frozen dataclass)
    callbacks: Sequence[Callback] = (),
    listeners: Sequence[Callable[[pd.DataFrame], None]] = (),
) -> SearchResult:
    """Run the one-shot search on ``data``; return the best epoch's supernet and genotype.

    ``callbacks`` see every step and epoch (as in :func:`~optfusion_lab.train.fit`);
    ``listeners`` receive every new alpha/beta snapshot (for live plots).
    """
    started = time.perf_counter()
    seed_everything(train_cfg.seed)
    net = build_supernet(data, supernet_cfg, search_cfg.design)
    arch_optimizer = torch.optim.Adam(
        [{"name": "architecture", "params": net.arch_parameters(), "lr": search_cfg.arch_lr,
          "weight_decay": 0.0}]
    )  # fmt: skip
    optimizer = JointOptimizer(
        make_optimizer(net, train_cfg, net.weight_parameters()), arch_optimizer
    )
    history = ArchitectureHistory(search_cfg.history_every, listeners)
    result = fit(net, data, train_cfg, [history, *callbacks], optimizer=optimizer)
    return SearchResult(
        network=net,
        genotype=net.genotype(),
        history=history.frame(),
        fit=result,
        search_seconds=time.perf_counter() - started,
    )


def write_search_run(
    out: str | Path,
    result: SearchResult,
    data: PreparedData,
    supernet_cfg: SupernetConfig,
    train_cfg: TrainConfig,
    search_cfg: SearchConfig,
    metadata: dict | None = None,
) -> dict:
    """Write a search run directory; return its result document (``metadata["preset"]``, if
    any, is also kept in config.json for retraining defaults).

    ``genotype.json``, ``history.csv`` (tidy alpha/softmax(beta)), ``epochs.csv`` (per-epoch
    metrics), ``config.json`` (every config, as ``asdict``), ``supernet.pt`` (best-epoch weights,
    alpha and beta, for warm starts) and ``result.json`` (the supernet's metrics at its best
    epoch, in the shape of ``optfusion-lab train``'s result file, plus search seconds).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.genotype.save(out / "genotype.json")
    _write_atomic(out / "history.csv", lambda p: result.history.to_csv(p, index=False))
    save_state_dict(result.network.state_dict(), out / "supernet.pt")
    config = search_config_document(data, supernet_cfg, train_cfg, search_cfg)
    config["preset"] = (metadata or {}).get("preset")
    write_json(out / "config.json", config)
    description = {"model": "optfusion-supernet", "model_config": config["supernet"],
                   "search_config": config["search"]}  # fmt: skip
    document = write_run(out, [train_cfg.seed], [result.fit], description, data, train_cfg,
                         metadata, history_name="epochs.csv")  # fmt: skip
    document["search_seconds"] = round(result.search_seconds, 3)
    document["genotype"] = result.genotype.to_dict()
    write_json(out / "result.json", document)
    return document


def search_config_document(
    data: PreparedData, supernet_cfg: SupernetConfig, train_cfg: TrainConfig, search_cfg
) -> dict:
    return {
        "data_dir": str(Path(data.directory).resolve()),
        "dataset": data.meta["dataset"],
        "num_fields": data.num_fields,
        "num_features": data.num_features,
        "data_source_sha256": data.meta.get("source", {}).get("sha256"),
        "supernet": asdict(supernet_cfg),
        "train": asdict(train_cfg),
        "search": asdict(search_cfg),
    }


# ---------------------------------------------------------------- retraining


def load_warm_start(run_dir: str | Path, data: PreparedData) -> dict:
    """The supernet weights of a search run, after checking they fit ``data``."""
    run_dir = Path(run_dir)
    config_path, weights = run_dir / "config.json", run_dir / "supernet.pt"
    if not config_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: not a search run (config.json/supernet.pt missing)")
    import json

    config = json.loads(config_path.read_text())
    if (config["num_features"], config["num_fields"]) != (data.num_features, data.num_fields):
        raise ValueError(
            f"warm start {run_dir}: the supernet was trained on data with "
            f"{config['num_features']} features / {config['num_fields']} fields, this data has "
            f"{data.num_features} / {data.num_fields}"
        )
    return torch.load(weights, map_location="cpu", weights_only=True)


def retrain(
    data: PreparedData,
    genotype: Genotype,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    selection: str = "hard",
    warm_start: dict | None = None,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    metadata: dict | None = None,
):
    """Train the derived model of ``genotype`` once per seed; return (per-seed frame, summary).

    ``warm_start`` (a supernet state dict, see :func:`load_warm_start`) starts every seed from
    the supernet's weights cut down to the derived model (the reference default); without it
    the model starts from scratch. Which one ran is recorded in result.json (``init``).
    """

    def build() -> FusionNetwork:
        model = FusionNetwork.from_genotype(genotype, data.num_features, data.num_fields,
                                            selection)  # fmt: skip
        if warm_start is not None:
            model.load_state_dict(supernet_state_for(model, warm_start))
        return model

    description = {
        "model": f"optfusion-{selection}",
        "model_config": {"selection": selection, "genotype": genotype.to_dict()},
        "init": "warm-start" if warm_start is not None else "scratch",
    }
    return fit_seeds(build, description, data, dataclasses.replace(train_cfg), seeds, out_dir,
                     callbacks, metadata)  # fmt: skip
