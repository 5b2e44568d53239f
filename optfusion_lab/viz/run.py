"""Figures straight from a run folder: ``viz.from_run(RUN_DIR).alpha_evolution()`` and friends.

A run folder is what ``optfusion-lab search``, ``train`` or ``retrain`` writes. A search run
with ``--seeds`` keeps one search per ``seed_<s>/`` and ``stability.json`` beside them; its
per-search figures take ``seed=`` (default: the first seed). Every method returns a plotly
figure; :meth:`RunView.figures` returns all that the folder can give and
:meth:`RunView.write_html` writes them to one offline HTML page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from ..models.genotype import Genotype
from .diagram import compare_diagrams, fusion_diagram
from .export import to_dot, to_mermaid, write_html
from .history import alpha_evolution, alpha_heatmap, operation_weights_evolution
from .results import load_epochs, results_figure, stability_figure, training_curves
from .state import FusionState, from_genotype, from_history

SEED_PREFIX = "seed_"


@dataclass(frozen=True)
class RunView:
    """Read-only view of a run folder; build it with :func:`from_run`."""

    directory: Path

    # ------------------------------------------------------------ what is there

    @cached_property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of a multi-seed search (``seed_<s>/`` folders), sorted; () otherwise."""
        found = []
        for path in self.directory.glob(f"{SEED_PREFIX}*"):
            suffix = path.name[len(SEED_PREFIX):]
            if path.is_dir() and suffix.lstrip("-").isdigit():
                found.append(int(suffix))
        return tuple(sorted(found))

    @property
    def is_search(self) -> bool:
        return _is_search(self.directory) or any(_is_search(self.search_dir(s)) for s in self.seeds)

    def search_dir(self, seed: int | None = None) -> Path:
        """The folder of one search: the run itself, or ``seed_<seed>`` (default: first seed)."""
        if seed is None and (not self.seeds or _is_search(self.directory)):
            return self.directory
        if seed is None:
            seed = self.seeds[0]
        path = self.directory / f"{SEED_PREFIX}{seed}"
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no search for seed {seed} (seeds here: "
                                    f"{list(self.seeds) or 'none'})")  # fmt: skip
        return path

    def _label(self, seed: int | None) -> str:
        path = self.search_dir(seed)
        config = _read_json(path / "config.json") or {}
        algorithm = (config.get("search") or {}).get("algorithm", "search")
        seed_used = (config.get("train") or {}).get("seed")
        return f"{algorithm}, seed {seed_used}" if seed_used is not None else algorithm

    # ------------------------------------------------------------ data

    def history(self, seed: int | None = None) -> pd.DataFrame:
        """The tidy architecture history (``history.csv``) of one search."""
        path = self.search_dir(seed) / "history.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no architecture history (not a search run?)")
        frame = pd.read_csv(path, dtype={"input": str, "operation": str})
        if "kind" not in frame.columns:
            raise ValueError(f"{path}: not an architecture history (a train run's history?)")
        return frame

    def genotype(self, seed: int | None = None) -> Genotype:
        path = self.search_dir(seed) / "genotype.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no genotype")
        return Genotype.load(path)

    def state(self, seed: int | None = None) -> FusionState:
        """The found architecture: the genotype, or, when the run could not derive one (e.g. OUT
        lost every input), the last record of its history."""
        name = f"found ({self._label(seed)})"
        try:
            return from_genotype(self.genotype(seed), name)
        except (FileNotFoundError, ValueError):
            config = _read_json(self.search_dir(seed) / "config.json") or {}
            shallow = (config.get("supernet") or {}).get("shallow", "cross")
            return from_history(self.history(seed), shallow=shallow,
                                name=f"{name}, last record: no genotype")  # fmt: skip

    # ------------------------------------------------------------ figures

    def alpha_evolution(self, seed: int | None = None, threshold: float = 0.0) -> go.Figure:
        title = f"Edge weights alpha during the search ({self._label(seed)})"
        return alpha_evolution(self.history(seed), threshold=threshold, title=title)

    def operation_weights(self, seed: int | None = None) -> go.Figure:
        return operation_weights_evolution(
            self.history(seed),
            title=f"Operation weights softmax(beta) during the search ({self._label(seed)})",
        )

    def alpha_heatmap(self, seed: int | None = None) -> go.Figure:
        return alpha_heatmap(self.state(seed))

    def diagram(self, seed: int | None = None, show_pruned: bool = True) -> go.Figure:
        return fusion_diagram(self.state(seed), show_pruned=show_pruned)

    def beside(self, design: str = "parallel", seed: int | None = None) -> go.Figure:
        """The found architecture beside a hand-made design (``parallel``, ``stacked``, ``dcn``,
        ... see :data:`~.state.HAND_MADE`), differences in red."""
        found = self.state(seed)
        title = f"Found fusion beside the hand-made {design} design"
        return compare_diagrams([found, design], [found.name, design], title=title)

    def compare_seeds(self) -> go.Figure:
        """The found architectures of every seed one under another (a multi-seed search)."""
        if len(self.seeds) < 2:
            raise ValueError(f"{self.directory}: fewer than two seeds to compare")
        states = [self.state(s) for s in self.seeds]
        return compare_diagrams(states, [f"seed {s}" for s in self.seeds],
                                title="Found fusion per seed")  # fmt: skip

    def stability(self) -> go.Figure:
        return stability_figure(self.directory)

    def training_curves(self) -> go.Figure:
        """Per-epoch curves of the run (every seed), or of each seed's search."""
        own = self.directory / "epochs.csv"
        if not own.is_file() and (self.directory / "history.csv").is_file() and not self.is_search:
            own = self.directory / "history.csv"  # a train / retrain run
        if own.is_file():
            return training_curves(own, title=f"Training curves: {self.directory.name}")
        if not self.seeds:
            raise FileNotFoundError(f"{self.directory}: no per-epoch history")
        epochs = pd.concat([load_epochs(self.search_dir(s) / "epochs.csv") for s in self.seeds],
                           ignore_index=True)  # fmt: skip
        return training_curves(epochs, title=f"Training curves: {self.directory.name}")

    def results(self, metric: str = "test_auc") -> go.Figure:
        """``metric`` over seeds (mean +- std) of this run, or of each seed's search."""
        if (self.directory / "result.json").is_file():
            return results_figure({self.directory.name: self.directory}, metric)
        return results_figure({self.directory.name: _seed_results(self, metric)}, metric)

    def figures(self, design: str = "parallel") -> dict[str, go.Figure]:
        """Every figure this folder can give, by name, in reading order."""
        figures: dict[str, go.Figure] = {}
        if self.is_search:
            has_alpha = (self.history()["kind"] == "alpha").any()
            if has_alpha:
                figures["alpha evolution"] = self.alpha_evolution()
            figures["operation weights"] = self.operation_weights()
            figures["fusion graph"] = self.diagram()
            if has_alpha:
                figures["final alpha"] = self.alpha_heatmap()
            figures[f"beside the {design} design"] = self.beside(design)
            if len(self.seeds) > 1:
                figures["fusion per seed"] = self.compare_seeds()
        if (self.directory / "stability.json").is_file():
            figures["stability over seeds"] = self.stability()
        try:
            figures["training curves"] = self.training_curves()
            figures["results"] = self.results()
        except (FileNotFoundError, ValueError):
            pass  # a folder without epochs or results (e.g. a search that collapsed)
        if not figures:
            raise ValueError(f"{self.directory}: no run files to draw (history.csv, "
                             "stability.json, result.json)")  # fmt: skip
        return figures

    def write_html(self, path: str | Path | None = None, design: str = "parallel") -> Path:
        """Every figure (:meth:`figures`) in one offline HTML page, by default
        ``RUN_DIR/figures.html``; return its path."""
        path = Path(path) if path is not None else self.directory / "figures.html"
        return write_html(self.figures(design), path, title=f"optfusion-lab: {self.directory}")

    def dot(self, seed: int | None = None, include_pruned: bool = False) -> str:
        return to_dot(self.state(seed), include_pruned=include_pruned)

    def mermaid(self, seed: int | None = None, include_pruned: bool = False) -> str:
        return to_mermaid(self.state(seed), include_pruned=include_pruned)


def from_run(run_dir: str | Path) -> RunView:
    """A :class:`RunView` of ``run_dir`` (a search, multi-seed search, train or retrain run)."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such run folder")
    return RunView(directory)


def _is_search(path: Path) -> bool:
    return (path / "history.csv").is_file() and (path / "genotype.json").is_file() or (
        (path / "history.csv").is_file() and (path / "supernet.pt").is_file()
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _seed_results(view: RunView, metric: str) -> dict:
    """A result-like document of ``metric`` over the per-seed searches of a multi-seed run."""
    values, seeds = [], []
    for seed in view.seeds:
        doc = _read_json(view.search_dir(seed) / "result.json") or {}
        entry = doc.get(metric)
        if isinstance(entry, dict) and entry.get("per_seed"):
            values.append(entry["per_seed"][0])
            seeds.append(seed)
    if not values:
        raise FileNotFoundError(f"{view.directory}: no per-seed result.json with {metric}")
    return {"seeds": seeds, metric: {"per_seed": values}}
