"""OptFusion search (one-shot, sequential, bilevel), derivation and retraining.

Every algorithm trains through :func:`optfusion_lab.train.fit`: validation after every epoch,
early stopping on validation AUC (patience 1 by default), and the weights, alpha and beta of the
best validation epoch restored before the genotype is derived. :func:`search` is the one entry
point; ``SearchConfig.algorithm`` picks the algorithm (DESIGN.md section 3):

- ``one-shot`` (the paper's method): single-level and joint. Every training batch gives one loss
  and one backward pass; then the weight optimizer (Adam, embedding and network groups, coupled
  L2) and the architecture optimizer (Adam over alpha and beta, ``arch_lr``, no weight decay)
  both step (a :class:`~optfusion_lab.train.JointOptimizer`). One phase, named ``one-shot``.
- ``sequential`` (the paper's ablation): phase ``connections`` learns alpha with every node's
  operation fixed to ADD (:meth:`FusionNetwork.fix_operation`; beta is in no optimizer and keeps
  its value); phase ``operations`` then learns beta with alpha frozen (in no optimizer). Each
  phase is a full :func:`fit` with its own epoch budget (``TrainConfig.epochs``), early stopping
  and fresh optimizers, and starts from the previous phase's best epoch. A phase with nothing to
  learn is skipped: a fixed design (``SearchConfig.design``) has no connections to learn, and a
  single candidate operation has no operation to choose (it is then also the one used in the
  first phase); with both there is nothing to search, which is a ValueError.
- ``bilevel`` (a teaching contrast, DARTS first order): the weights step on training batches in
  :func:`fit`; after every weight step :class:`BilevelArchitectureStep` takes the next
  *validation* batch and steps alpha and beta on its loss alone. Model selection (early
  stopping) uses the same validation split, so the supernet's validation AUC is optimistic here;
  its test metrics are not. One phase, named ``bilevel``.

``SearchConfig(settle_steps=N)`` (ours, not the paper's; off by default) ends each phase once
the derived genotype has not changed for ``N`` steps (:mod:`optfusion_lab.settle`): the phase
then finishes as early stopping would (best validation epoch restored) and the next one starts.

The fixed single-operation ablation is ``SupernetConfig(operations=("prod",))`` and the
fixed-edge searches are ``SearchConfig(design="parallel" | "stacked")``; both combine with every
algorithm. Where we differ from the reference: batches are reshuffled every epoch by default
(``TrainConfig.shuffle=False`` gives the stored order), PROD multiplies active inputs only, and
derived models prune dead nodes (see :mod:`optfusion_lab.models.supernet`).

:class:`ArchitectureHistory` records alpha and the operation weights every ``history_every``
steps, at every phase start and at every epoch end as a tidy frame, and sends each new snapshot
to the callbacks' ``on_architecture`` event (one stream with the step and epoch events, see
:mod:`optfusion_lab.train.events`), so a notebook can plot the search live.

Genotype stability over seeds (:func:`search_seeds`, :func:`stability_summary`): per candidate
edge, the share of seeds in which it is active and live; per fusion node, the share of seeds in
which it is live and, among those, how often each operation wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .data.dataset import PreparedData
from .data.loader import BatchLoader
from .io import SEARCH_RUN, claim_output_folder, write_atomic, write_json
from .models.genotype import DESIGNS, FusionGraph, Genotype
from .models.supernet import FusionNetwork, SupernetConfig, supernet_state_for
from .names import ALGORITHMS
from .settle import SettledArchitecture
from .train import HISTORY_COLUMNS as EPOCH_COLUMNS
from .train import (
    Callback,
    EpochLog,
    EventStream,
    FitResult,
    JointOptimizer,
    RunConfig,
    SeedsResult,
    TrainConfig,
    TrainState,
    autocast,
    fingerprints_match,
    fit,
    fit_seeds,
    make_optimizer,
    resolve_device,
    save_state_dict,
    seed_everything,
    write_run,
)

SEQUENTIAL_FIXED_OPERATION = "add"  # the operation of every node while sequential learns edges
# Tidy architecture history: one row per alpha (kind "alpha": node = dst, input = src) or per
# operation weight (kind "weight": node, operation) at one record of one phase.
HISTORY_COLUMNS = ("phase", "step", "epoch", "when", "kind", "node", "input", "operation", "value")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the search itself (the supernet and training have their own configs)."""

    arch_lr: float = 0.1  # Adam learning rate of alpha and beta (reference 0.3/0.1/0.01)
    history_every: int = 20  # record alpha/operation weights every this many steps (and epochs)
    design: str | None = None  # None: learn the edges; "parallel" or "stacked": fixed edges
    algorithm: str = "one-shot"  # one-shot (the paper's), sequential (ablation) or bilevel
    gate_sparsity: float = 0.0  # ours, not the paper's (0: off): every active edge costs this
    # much in the architecture's objective (see gate_sparsity_hook)
    settle_steps: int | None = None  # ours, not the paper's (None: off): end each search phase
    # once the derived genotype has not changed for this many steps (see optfusion_lab.settle)

    def __post_init__(self):
        if self.arch_lr <= 0:
            raise ValueError(f"arch_lr must be > 0, got {self.arch_lr}")
        if not (self.gate_sparsity >= 0 and math.isfinite(self.gate_sparsity)):
            raise ValueError(f"gate_sparsity must be >= 0, got {self.gate_sparsity}")
        if self.history_every < 1:
            raise ValueError(f"history_every must be >= 1, got {self.history_every}")
        if self.settle_steps is not None and self.settle_steps < 1:
            raise ValueError(f"settle_steps must be >= 1 (or None: off), got {self.settle_steps}")
        if self.design is not None and self.design not in DESIGNS:
            raise ValueError(f"unknown design {self.design!r}; choose one of {list(DESIGNS)}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algorithm!r}; choose one of "
                             f"{', '.join(ALGORITHMS)}")


# ---------------------------------------------------------------- architecture history


def architecture_rows(
    net: FusionNetwork, phase: str, step: int, epoch: int, when: str
) -> list[dict]:
    """Tidy rows (``HISTORY_COLUMNS``) of the current alpha (one per edge, search mode only) and
    operation weights (one per node and operation: softmax(beta), or one-hot while an operation
    is fixed, i.e. what the network mixes with)."""
    graph = net.graph
    alpha = net.alpha.detach().cpu().tolist() if net.mode == "search" else None
    weights = net.operation_weights().detach().cpu().tolist()
    records = []
    if alpha is not None:
        for (src, dst), a in zip(graph.edges, alpha, strict=True):
            records.append(("alpha", dst, src, "", a))
    for node, row in zip(graph.fusion_nodes, weights, strict=True):
        for op, w in zip(net.cfg.operations, row, strict=True):
            records.append(("weight", node, "", op, w))
    return [dict(zip(HISTORY_COLUMNS, (phase, step, epoch, when, *r), strict=True))
            for r in records]


class ArchitectureHistory(Callback):
    """Records alpha and the operation weights during a search (one device-to-host copy each).

    Call :meth:`start_phase` before each phase's :func:`fit`: it records the exact starting
    architecture (``when="start"``). ``step`` counts optimizer steps since the search began
    (across phases, so a plot over steps shows the whole search); ``epoch`` is the epoch within
    its phase. Each new snapshot (a tidy DataFrame) goes to the ``on_architecture`` event of
    ``stream``'s callbacks.
    """

    essential = True  # the search's own record: its failure is the search's failure

    def __init__(self, every: int, stream: EventStream | None = None):
        self.every = every
        self.stream = stream if stream is not None else EventStream()
        self.rows: list[dict] = []
        self.phase = ""
        self.offset = 0  # steps taken by the phases before this one
        self.steps = 0  # steps taken so far, all phases

    def record(self, net: FusionNetwork, step: int, epoch: int, when: str) -> None:
        rows = architecture_rows(net, self.phase, step, epoch, when)
        self.rows += rows
        if self.stream.listens("on_architecture"):
            self.stream.emit("on_architecture", pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)))

    def start_phase(self, net: FusionNetwork, phase: str) -> None:
        self.phase, self.offset = phase, self.steps
        self.record(net, self.steps, 0, "start")

    def on_step(self, state: TrainState) -> None:
        self.steps = self.offset + state.step
        if state.step % self.every == 0:
            self.record(state.model, self.steps, state.epoch, "step")

    def on_epoch_end(self, state: TrainState) -> None:
        self.steps = self.offset + state.step
        self.record(state.model, self.steps, state.epoch, "epoch")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS))

    # A fit checkpoint keeps the history with it (see optfusion_lab.train.fit).
    def state_dict(self) -> dict:
        return {"rows": list(self.rows), "phase": self.phase, "offset": self.offset,
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.phase, self.offset, self.steps = state["phase"], state["offset"], state["steps"]


# ---------------------------------------------------------------- bilevel architecture step


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False):
    """The training objective on one batch: BCE with logits (as in :func:`fit`)."""
    with autocast(x.device, amp):
        logits = model(x)  # (B,)
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), y)


class BilevelArchitectureStep(Callback):
    """First-order DARTS: after every weight step, one architecture step on a validation batch.

    ``on_step`` takes the next batch of ``valid_loader`` (cycling through reshuffled passes),
    zeroes the architecture gradients, backpropagates the validation loss into the architecture
    parameters only (``backward(inputs=...)``), and steps ``arch_optimizer`` (Adam over
    ``arch_parameters()``). The zeroing matters: the training backward of :func:`fit` also
    reaches alpha and beta (they require grad), and without it their ``.grad`` would hold
    training plus validation gradients. The weight gradients are untouched by this backward
    (and :func:`fit` zeroes them before its next step anyway). Under torch.distributed every
    rank draws the same validation batches, so the architecture stays identical across ranks.
    """

    essential = True  # a step of the algorithm, not a monitor

    def __init__(
        self, valid_loader: BatchLoader, arch_optimizer: torch.optim.Optimizer, amp: bool = False
    ):
        self.loader = valid_loader
        self.arch_optimizer = arch_optimizer
        self.amp = amp
        self.arch_parameters = [p for g in arch_optimizer.param_groups for p in g["params"]]
        self.passes = 0  # passes over the validation split begun so far
        self.taken = 0  # batches taken in the current pass
        self._batches: Iterator | None = None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next validation batch (features (B, F), labels (B,)) on the training device."""
        while True:
            if self._batches is None:
                self.loader.set_epoch(self.passes)
                self._batches, self.passes, self.taken = iter(self.loader), self.passes + 1, 0
            batch = next(self._batches, None)
            if batch is not None:
                self.taken += 1
                return batch
            self._batches = None

    def on_step(self, state: TrainState) -> None:
        x, y = self.next_batch()
        self.arch_optimizer.zero_grad(set_to_none=True)  # drop the training batch's gradients
        loss = batch_loss(state.model, x, y, self.amp)
        loss.backward(inputs=self.arch_parameters)
        self.arch_optimizer.step()

    # A fit checkpoint keeps the optimizer and the position in the validation passes.
    def state_dict(self) -> dict:
        return {"arch_optimizer": self.arch_optimizer.state_dict(), "passes": self.passes,
                "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.passes, self.taken, self._batches = state["passes"], state["taken"], None
        if self.passes > 0:  # continue the pass that was running where it stopped
            self.loader.set_epoch(self.passes - 1)
            self._batches = itertools.islice(iter(self.loader), self.taken, None)


def validation_loader(data: PreparedData, train_cfg: TrainConfig) -> BatchLoader:
    """Shuffled batches of the validation split on the training device (bilevel search)."""
    device = resolve_device(train_cfg.device)
    x, y = data.arrays("valid")
    on_device = train_cfg.data_on_device and device.type == "cuda"
    return BatchLoader(x, y, train_cfg.batch_size, shuffle=True, seed=train_cfg.seed,
                       device=device, on_device=on_device)


# ---------------------------------------------------------------- search


@dataclass
class SearchResult:
    """What a search leaves: the supernet (best epoch), its genotype, histories, metrics."""

    network: FusionNetwork
    genotype: Genotype | None  # None when the best state cannot be derived (see collapse)
    history: pd.DataFrame  # tidy alpha / operation-weight history (see HISTORY_COLUMNS)
    fit: FitResult  # the final phase: epochs, validation and test metrics at its best epoch
    search_seconds: float  # wall time of the whole search, evaluation included
    algorithm: str = "one-shot"  # SearchConfig.algorithm
    phases: dict[str, FitResult] = dataclasses.field(default_factory=dict)  # in run order
    collapse: str | None = None  # why no genotype could be derived (see collapse_report)
    # SearchConfig.settle_steps: phase -> (step of the phase, step of the search) at which its
    # architecture settled and the phase ended (phases that ran to their end are absent)
    settled: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        """Ended early (a callback's stop request or Ctrl-C); later phases did not run. A phase
        that settled (``settled``) is not stopped: it ended as early stopping ends one."""
        return self.fit.stopped

    @property
    def stop_reason(self) -> str:
        """Why the final phase ended early: a stop, or its settled architecture ("" if not)."""
        return self.fit.stop_reason


@dataclass(frozen=True)
class SearchPhase:
    """One :func:`fit` of a search: which architecture parameters it learns, and how."""

    name: str
    learned: tuple[nn.Parameter, ...]  # the architecture parameters this phase optimises
    fixed_operation: str | None = None  # every node mixes with this operation alone (or None)


def search_phases(net: FusionNetwork, algorithm: str) -> list[SearchPhase]:
    """The phases of ``algorithm`` on ``net`` (see the module docstring)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown search algorithm {algorithm!r}; choose one of "
                         f"{', '.join(ALGORITHMS)}")
    if algorithm != "sequential":
        return [SearchPhase(algorithm, tuple(net.arch_parameters()))]
    operations = net.cfg.operations
    phases = []
    if net.mode == "search":  # learned edges; a fixed design has no connections to learn
        if len(operations) > 1 and SEQUENTIAL_FIXED_OPERATION not in operations:
            raise ValueError(
                f"the sequential search learns connections with {SEQUENTIAL_FIXED_OPERATION} "
                f"fixed, which is not among the operations {operations}"
            )
        fixed = SEQUENTIAL_FIXED_OPERATION if len(operations) > 1 else None
        phases.append(SearchPhase("connections", (net.alpha,), fixed))
    if len(operations) > 1:  # a single operation leaves nothing to choose
        phases.append(SearchPhase("operations", (net.beta,)))
    if not phases:
        raise ValueError("the sequential search has nothing to learn: the edges are a fixed "
                         "design and there is a single operation")
    return phases


@contextlib.contextmanager
def gate_sparsity_hook(net: FusionNetwork, strength: float):
    """Inside the block, every backward pass adds ``strength`` to the gradient of each *active*
    edge's alpha (alpha > 0): the straight-through gradient of ``strength * (number of active
    edges)`` added to the loss, applied to active edges only, so an edge that is off is not
    pushed further down and can come back when the loss asks for it.

    This is ours, not the paper's (its objective is the loss alone, under which an extra edge
    whose input the weights can ignore costs nothing: see the README). Nothing happens with
    ``strength`` 0 or a network without alpha.
    """
    alpha = getattr(net, "alpha", None)
    if strength == 0 or not isinstance(alpha, nn.Parameter):
        yield
        return
    handle = alpha.register_hook(lambda grad: grad + strength * (alpha.detach() > 0))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _frozen(parameters: Sequence[nn.Parameter]):
    """``requires_grad=False`` for ``parameters`` inside the block (restored afterwards)."""
    previous = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, previous, strict=True):
            p.requires_grad_(flag)


def build_supernet(
    data: PreparedData, cfg: SupernetConfig, design: str | None = None
) -> FusionNetwork:
    """A search supernet for ``data``, or a fixed-edges one for a hand-made ``design``."""
    if design is None:
        return FusionNetwork(data.num_features, data.num_fields, cfg)
    edges = DESIGNS[design](FusionGraph(cfg.num_layers))
    return FusionNetwork(data.num_features, data.num_fields, cfg, mode="fixed-edges", edges=edges)


def search(
    data: PreparedData,
    supernet: SupernetConfig | FusionNetwork,
    train_cfg: TrainConfig,
    search_cfg: SearchConfig = SearchConfig(),  # noqa: B008 (frozen dataclass)
    callbacks: EventStream | Sequence[Callback] = (),
    listeners: Sequence[Callable[[pd.DataFrame], None]] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
    *,
    live_dir: str | Path | None = None,
) -> SearchResult:
    """Run ``search_cfg.algorithm`` on ``data``; return the best epoch's supernet and genotype.

    ``result = search(data, SupernetConfig(embed_dim=4), TrainConfig(epochs=2))``

    ``supernet`` is a :class:`SupernetConfig` (the supernet is built here, seeded with
    ``train_cfg.seed``; a fixed ``search_cfg.design`` gives fixed edges) or a pre-built
    :class:`FusionNetwork` (searched as it is, e.g. with a changed initialisation).

    ``callbacks`` see every step and epoch of every phase (as in :func:`~optfusion_lab.train.fit`;
    ``state.step`` starts again at 1 in each phase, ``state.phase`` names it) and every new
    alpha/operation-weight snapshot (``on_architecture``); ``listeners`` are plain functions
    that receive those snapshots too (for live plots). A stop requested by a callback
    (``state.request_stop()`` or ``StopTraining``) or Ctrl-C ends the current phase as in
    :func:`~optfusion_lab.train.fit` and starts no further phase; ``result.stopped`` says so.
    With ``search_cfg.settle_steps``, a phase whose architecture has settled ends early as a
    finished phase (``result.settled`` says when; see :mod:`optfusion_lab.settle`).

    With ``checkpoint_dir`` every phase checkpoints after each epoch (``checkpoint.pt``, or
    ``checkpoint-<phase>.pt`` for the two phases of ``sequential``); ``resume`` continues from
    them (finished phases are reloaded, not rerun), and ``fingerprint`` guards against resuming
    with other data or options (see :func:`optfusion_lab.train.fit`). With ``live_dir``,
    ``epochs.csv`` and ``history.csv`` (see :func:`write_search_run`) are rewritten there after
    every epoch, so a monitor in another process can follow the search.
    """
    started = time.perf_counter()
    for folder in {checkpoint_dir, live_dir} - {None}:
        claim_output_folder(folder, SEARCH_RUN)
    seed_everything(train_cfg.seed)
    if isinstance(supernet, FusionNetwork):
        if search_cfg.design is not None and supernet.mode != "fixed-edges":
            raise ValueError(f"design {search_cfg.design!r} asks for fixed edges, but the given "
                             f"network is in {supernet.mode!r} mode")
        net = supernet
    else:
        net = build_supernet(data, supernet, search_cfg.design)
    plan = search_phases(net, search_cfg.algorithm)
    stream = EventStream.of(callbacks)
    history = ArchitectureHistory(search_cfg.history_every, stream)
    own = [history, *(ArchitectureListener(f) for f in listeners)]
    files = SearchFiles(Path(live_dir), history) if live_dir is not None else None
    phases: dict[str, FitResult] = {}
    settled: dict[str, tuple[int, int]] = {}
    with stream.first(*own, *([files] if files is not None else [])):
        for phase in plan:
            # after the phase's own steps (the bilevel architecture step), before any monitor
            settle = search_cfg.settle_steps
            watch = [SettledArchitecture(settle)] if settle is not None else []
            optimizer, steps = phase_optimizers(net, phase, data, train_cfg, search_cfg)
            checkpoint = None
            if checkpoint_dir is not None:
                name = "checkpoint.pt" if len(plan) == 1 else f"checkpoint-{phase.name}.pt"
                checkpoint = Path(checkpoint_dir) / name
            learned = {id(p) for p in phase.learned}
            resting = [p for p in net.arch_parameters() if id(p) not in learned]
            net.fix_operation(phase.fixed_operation)
            history.start_phase(net, phase.name)
            try:
                with (_frozen(resting), stream.first(*steps, *watch),  # frozen: in no optimizer
                      gate_sparsity_hook(net, search_cfg.gate_sparsity)):
                    result = fit(net, data, train_cfg, stream, optimizer, checkpoint, resume,
                                 fingerprint, phase=phase.name)
            finally:
                net.fix_operation(None)
            phases[phase.name] = result
            at = watch[0].settled_step if watch else None
            if at is not None and not result.stopped:
                settled[phase.name] = (at, history.offset + at)
            if files is not None:
                files.finish(result.history.assign(phase=phase.name, seed=train_cfg.seed))
            if result.stopped:  # a callback's request or Ctrl-C ends every phase
                break
    frame = history.frame()
    collapse = collapse_report(net, frame, result, search_cfg)
    return SearchResult(
        network=net,
        genotype=net.genotype() if collapse is None else None,
        history=frame,
        fit=result,
        search_seconds=time.perf_counter() - started,
        algorithm=search_cfg.algorithm,
        phases=phases,
        collapse=collapse,
        settled=settled,
    )


def out_is_live(graph: FusionGraph, alpha: Sequence[float]) -> bool:
    """Whether OUT has a live input (a path of active edges from E) under ``alpha``."""
    return bool(graph.live_edges(e for e, a in zip(graph.edges, alpha, strict=True) if a > 0))


def collapse_report(
    net: FusionNetwork, history: pd.DataFrame, fit_result: FitResult, search_cfg: SearchConfig
) -> str | None:
    """None when the supernet's current (best-epoch) architecture can be derived; otherwise a
    message that says what collapsed, when (from the architecture history) and what to try.

    A search collapses when every input of OUT is off or comes from a dead node: the derived
    model would predict a constant, so there is no genotype. The run is still worth keeping
    (its history shows how it got there), so this is a report, not an exception.
    """
    if net.mode != "search":
        return None  # a fixed design's edges are live by construction
    graph = net.graph
    alpha = net.alpha.detach().cpu().tolist()
    if out_is_live(graph, alpha):
        return None
    out_alpha = ", ".join(f"{src} {a:+.3f}" for (src, dst), a in zip(graph.edges, alpha,
                                                                    strict=True) if dst == "OUT")
    records = history[history.kind == "alpha"].groupby(["step", "when"], sort=False)["value"]
    lost = [step for (step, _), values in records if not out_is_live(graph, values.tolist())]
    first = f"step {lost[0]}" if lost else "an unrecorded step"
    live_again = [step for (step, _), values in records
                  if lost and step > lost[0] and out_is_live(graph, values.tolist())]
    later = (f"; it was live again at step {live_again[0]}, but the best validation epoch "
             "is a collapsed one" if live_again else "")
    return (
        f"the search collapsed: at its best epoch (epoch {fit_result.best_epoch}) OUT has no "
        f"live input (every edge into OUT is off or comes from a dead node; alpha into OUT: "
        f"{out_alpha}), so no architecture can be derived. OUT first had no live input at "
        f"{first} of the architecture history (recorded every {search_cfg.history_every} "
        f"steps){later}. Every other file of the run is kept. Try a smaller --arch-lr (this run: "
        f"{search_cfg.arch_lr}), a larger --alpha-init (this run: {net.cfg.alpha_init}), "
        "another --seed, or more data: on data without signal (e.g. random labels) no "
        "connection helps, and the search may switch them all off."
    )


def phase_optimizers(
    net: FusionNetwork, phase: SearchPhase, data: PreparedData, train_cfg: TrainConfig,
    search_cfg: SearchConfig,
) -> tuple[torch.optim.Optimizer | JointOptimizer, list[Callback]]:
    """The optimizer :func:`fit` steps for ``phase``, and the callbacks that step the rest.

    Weights: Adam with the embedding and network groups. Architecture (the parameters the phase
    learns): Adam with ``arch_lr`` and no weight decay, stepped jointly with the weights
    (one-shot, sequential), or on validation batches by :class:`BilevelArchitectureStep`.
    """
    arch_optimizer = torch.optim.Adam(
        [{"name": "architecture", "params": list(phase.learned), "lr": search_cfg.arch_lr,
          "weight_decay": 0.0}]
    )
    weight_optimizer = make_optimizer(net, train_cfg, net.weight_parameters())
    if search_cfg.algorithm == "bilevel":
        step = BilevelArchitectureStep(validation_loader(data, train_cfg), arch_optimizer,
                                       train_cfg.amp)
        return weight_optimizer, [step]
    return JointOptimizer(weight_optimizer, arch_optimizer), []


class ArchitectureListener(Callback):
    """A plain function called with every architecture snapshot (``search(listeners=...)``)."""

    def __init__(self, listener: Callable[[pd.DataFrame], None]):
        self.listener = listener

    def on_architecture(self, frame: pd.DataFrame) -> None:
        self.listener(frame)


class SearchFiles(EpochLog):
    """``epochs.csv`` (every phase's epochs so far) and ``history.csv`` (the architecture
    history so far) of a search run, rewritten atomically after every epoch."""

    def __init__(self, out: Path, history: ArchitectureHistory):
        super().__init__(out / "epochs.csv", ("phase", "seed", *EPOCH_COLUMNS))
        self.history = history
        self.architecture = out / "history.csv"

    def on_epoch_end(self, state: TrainState) -> None:
        super().on_epoch_end(state)
        frame = self.history.frame()
        write_atomic(self.architecture, lambda p: frame.to_csv(p, index=False))


# ---------------------------------------------------------------- seeds and stability


def search_seeds(
    data: PreparedData,
    supernet_cfg: SupernetConfig,
    train_cfg: TrainConfig,
    search_cfg: SearchConfig,
    seeds: Sequence[int],
    *,
    callbacks: EventStream | Sequence[Callback] = (),
    listeners: Sequence[Callable[[pd.DataFrame], None]] = (),
    on_result: Callable[[int, SearchResult | None], None] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    metadata: dict | None = None,
    truth: Genotype | None = None,
) -> tuple[list[SearchResult | None], dict | None]:
    """One :func:`search` per seed (``train_cfg.seed`` replaced by each); return the results, in
    seed order, and the :func:`stability_summary` of their genotypes.

    ``results, stability = search_seeds(data, SupernetConfig(), TrainConfig(), SearchConfig(),
    seeds=[0, 1, 2], on_result=lambda seed, result: print(seed, result.genotype))``

    ``on_result(seed, result)`` runs after each seed. Without ``out_dir`` nothing is written;
    with it, every seed is a :func:`search_run` into ``out_dir/seed_<s>`` (checkpoints,
    ``resume``; a seed that had finished already gives None as its result) and the stability
    summary is written to ``out_dir`` (:func:`write_stability`). Each supernet is moved to the
    CPU after its seed, so the accelerator holds one supernet at a time. A stopped search (see
    :func:`search`) is the last one: no further seed starts, and the stability summary covers
    the finished seeds only (``seeds`` lists them; it is None when none finished).
    A collapsed search (no genotype, see :func:`collapse_report`) is left out of the summary
    too; the other seeds still run.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("search_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if out_dir is not None:
        claim_output_folder(out_dir, SEARCH_RUN)  # the seeds' runs and the stability summary
    stream = EventStream.of(callbacks)  # one stream: a dropped monitor stays dropped
    results, genotypes = [], {}
    for seed in seeds:
        cfg = dataclasses.replace(train_cfg, seed=seed)
        if out_dir is None:
            result = search(data, supernet_cfg, cfg, search_cfg, stream, listeners)
        else:
            seed_dir = Path(out_dir) / f"seed_{seed}"
            result = search_run(seed_dir, data, supernet_cfg, cfg, search_cfg, resume=resume,
                                metadata=metadata, truth=truth, callbacks=stream,
                                listeners=listeners)
        if on_result is not None:
            on_result(seed, result)
        results.append(result)
        if result is None:  # finished in an earlier run (without genotype.json if it collapsed)
            path = Path(out_dir) / f"seed_{seed}" / "genotype.json"
            if path.is_file():
                genotypes[seed] = Genotype.load(path)
            continue
        result.network.to("cpu")
        if result.stopped:
            break
        if result.genotype is not None:  # a collapsed seed has none (its files are kept)
            genotypes[seed] = result.genotype
    if not genotypes:
        return results, None
    stability = stability_summary(list(genotypes.values()), list(genotypes))
    if out_dir is not None:
        write_stability(out_dir, stability)
    stability["seeds_requested"] = seeds
    return results, stability


def search_run(
    out_dir: str | Path,
    data: PreparedData,
    supernet_cfg: SupernetConfig,
    train_cfg: TrainConfig,
    search_cfg: SearchConfig = SearchConfig(),  # noqa: B008 (frozen dataclass)
    *,
    resume: bool = False,
    metadata: dict | None = None,
    truth: Genotype | None = None,
    callbacks: EventStream | Sequence[Callback] = (),
    listeners: Sequence[Callable[[pd.DataFrame], None]] = (),
) -> SearchResult | None:
    """One :func:`search` into the run directory ``out_dir`` (what ``optfusion-lab search``
    does); return its result.

    ``result = search_run("runs/search/teacher", data, SupernetConfig(), TrainConfig())``

    A checkpoint is written after every epoch and ``epochs.csv``/``history.csv`` are rewritten
    as the search goes; at the end :func:`write_search_run` writes the whole run directory.
    ``resume=True`` continues from the checkpoints; on a run that finished already it changes
    nothing and returns None (with other data or options it is a ValueError). A stopped search
    writes no result files and keeps its checkpoint (continue with ``resume=True``). ``truth``
    scores the genotype against a known one (``metadata["score_against_truth"]``).
    """
    out = Path(out_dir)
    fingerprint = search_fingerprint(data, supernet_cfg, train_cfg, search_cfg)
    if resume and (out / "result.json").is_file():
        config = json.loads((out / "config.json").read_text())
        if not fingerprints_match(config.get("fingerprint") or {}, fingerprint):
            raise ValueError(f"{out}: this finished search used other data or options; "
                             "drop --resume or choose another --out")
        return None
    result = search(data, supernet_cfg, train_cfg, search_cfg, callbacks, listeners,
                    checkpoint_dir=out, resume=resume, fingerprint=fingerprint,
                    live_dir=out)
    if result.stopped:
        return result
    metadata = dict(metadata or {})
    if truth is not None and result.genotype is not None:
        from .models.teacher import score_genotype

        metadata["score_against_truth"] = score_genotype(result.genotype, truth).to_dict()
    write_search_run(out, result, data, supernet_cfg, train_cfg, search_cfg, metadata)
    return result


def stability_summary(genotypes: Sequence[Genotype], seeds: Sequence[int] | None = None) -> dict:
    """How stable the derived architecture is over searches (e.g. one per seed).

    ``stability = stability_summary([r.genotype for r in results], seeds=[0, 1, 2])``

    Returns ``{"num_genotypes", "seeds", "edges", "operations"}`` with two tidy frames:

    - ``edges``: one row per candidate edge of the graph, ``edge`` ("src->dst"),
      ``active_share`` (alpha > 0) and ``live_share`` (active and carrying signal from E to OUT,
      :meth:`Genotype.live_edges`) over the genotypes;
    - ``operations``: one row per fusion node and operation, ``live_share`` (the share of
      genotypes in which the node is live: OUT always is) and ``win_share`` (among those, the
      share in which the operation is the node's argmax; NaN when the node is never live).
    """
    genotypes = list(genotypes)
    if not genotypes:
        raise ValueError("stability_summary needs at least one genotype")
    first = genotypes[0]
    for g in genotypes[1:]:
        if (g.num_layers, g.operations) != (first.num_layers, first.operations):
            raise ValueError(
                "genotypes to compare must share the graph and the operations; got "
                f"{first.num_layers} layers {first.operations} and {g.num_layers} layers "
                f"{g.operations}"
            )
    if seeds is not None and len(seeds) != len(genotypes):
        raise ValueError(f"{len(seeds)} seeds for {len(genotypes)} genotypes")
    n = len(genotypes)
    active = [set(g.edges) for g in genotypes]
    live = [set(g.live_edges()) for g in genotypes]
    edges = pd.DataFrame(
        [{"edge": f"{src}->{dst}",
          "active_share": sum((src, dst) in a for a in active) / n,
          "live_share": sum((src, dst) in a for a in live) / n}
         for src, dst in first.graph.edges],
        columns=["edge", "active_share", "live_share"],
    )
    rows = []
    for node in first.graph.fusion_nodes:
        winners = [g.choice(node).operation for g in genotypes
                   if node == "OUT" or node in g.live_blocks()]
        for op in first.operations:
            win_share = winners.count(op) / len(winners) if winners else math.nan
            rows.append({"node": node, "operation": op, "live_share": len(winners) / n,
                         "win_share": win_share})
    operations = pd.DataFrame(rows, columns=["node", "operation", "live_share", "win_share"])
    return {"num_genotypes": n, "seeds": list(seeds) if seeds is not None else None,
            "edges": edges, "operations": operations}


def write_stability(out_dir: str | Path, stability: dict) -> dict:
    """Write ``stability_edges.csv``, ``stability_operations.csv`` and ``stability.json`` (both
    frames as records, NaN as null) of a :func:`stability_summary`; return the JSON document."""
    out = claim_output_folder(out_dir, SEARCH_RUN)
    edges, operations = stability["edges"], stability["operations"]
    write_atomic(out / "stability_edges.csv", lambda p: edges.to_csv(p, index=False))
    write_atomic(out / "stability_operations.csv", lambda p: operations.to_csv(p, index=False))

    def records(frame: pd.DataFrame) -> list[dict]:
        return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in frame.to_dict(orient="records")]

    document = {
        "format": "optfusion-stability",
        "num_genotypes": stability["num_genotypes"],
        "seeds": stability["seeds"],
        "edges": records(edges),
        "operations": records(operations),
    }
    write_json(out / "stability.json", document)
    return document


# ---------------------------------------------------------------- run directory


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

    ``write_search_run("runs/search/x", result, data, supernet_cfg, train_cfg, search_cfg)``

    ``genotype.json``, ``history.csv`` (tidy alpha/operation weights, ``HISTORY_COLUMNS``),
    ``epochs.csv`` (per-epoch metrics of every phase, with a ``phase`` column), ``config.json``
    (:meth:`RunConfig.to_dict`: every config as ``asdict``, the algorithm in ``search``, and the
    resume fingerprint), ``supernet.pt`` (best-epoch weights, alpha and beta, for warm starts)
    and ``result.json`` (the supernet's metrics at the final phase's best epoch, in the shape of
    ``optfusion-lab train``'s result file, plus ``algorithm``, per-phase metrics ``phases`` and
    search seconds, and ``settle``: ``settle_steps`` and the phases that settled, with their
    steps; ``stop_reason`` says why the final phase ended early, if it did). A collapsed
    search (``result.genotype`` None) writes everything but ``genotype.json``; its result.json
    has ``"genotype": null`` and the reason in ``collapse``.
    """
    out = claim_output_folder(out, SEARCH_RUN)
    if result.genotype is not None:
        result.genotype.save(out / "genotype.json")
    write_atomic(out / "history.csv", lambda p: result.history.to_csv(p, index=False))
    save_state_dict(result.network.state_dict(), out / "supernet.pt")
    run_cfg = search_run_config(data, supernet_cfg, train_cfg, search_cfg,
                                (metadata or {}).get("preset"))
    document = write_run(out, [train_cfg.seed], [result.fit], run_cfg, metadata,
                         history_name="epochs.csv")
    # write_run wrote the final phase's epochs; epochs.csv keeps every phase instead.
    phases = result.phases or {result.algorithm: result.fit}
    epochs = pd.concat(
        [r.history.assign(phase=name, seed=train_cfg.seed) for name, r in phases.items()],
        ignore_index=True,
    )[["phase", "seed", *EPOCH_COLUMNS]]
    write_atomic(out / "epochs.csv", lambda p: epochs.to_csv(p, index=False))
    document["phases"] = [{"phase": name, **r.scalars()} for name, r in phases.items()]
    document["search_seconds"] = round(result.search_seconds, 3)
    resumed = [r.resumed_from_epoch for r in phases.values() if r.resumed_from_epoch is not None]
    document["resumed_from_epoch"] = resumed[-1] if resumed else None
    document["genotype"] = result.genotype.to_dict() if result.genotype is not None else None
    document["collapse"] = result.collapse
    document["stop_reason"] = document["stop_reason"] or result.stop_reason
    document["settle"] = {  # SearchConfig.settle_steps (ours; None: off, the paper's search)
        "settle_steps": search_cfg.settle_steps,
        "settled": bool(result.settled),
        "phases": {name: {"step": step, "search_step": total}
                   for name, (step, total) in result.settled.items()},
        "settled_step": max((total for _, total in result.settled.values()), default=None),
    }
    write_json(out / "result.json", document)
    return document


def search_run_config(
    data: PreparedData, supernet_cfg: SupernetConfig, train_cfg: TrainConfig,
    search_cfg: SearchConfig, preset: str | None = None,
) -> RunConfig:
    """The :class:`~optfusion_lab.train.RunConfig` of a search: config.json, its resume
    fingerprint and result.json's header all come from it."""
    return RunConfig.of(data, "optfusion-supernet", supernet_cfg, train_cfg, search=search_cfg,
                        preset=preset, algorithm=search_cfg.algorithm)


def search_fingerprint(
    data: PreparedData, supernet_cfg: SupernetConfig, train_cfg: TrainConfig, search_cfg
) -> dict:
    """What a resumed search must share with its checkpoint (see
    :meth:`RunConfig.fingerprint`): the data and every option that changes the result."""
    return search_run_config(data, supernet_cfg, train_cfg, search_cfg).fingerprint()


# ---------------------------------------------------------------- retraining


def retrain_defaults(
    data: PreparedData,
    selection: str = "hard",
    search_dir: str | Path | None = None,
    warm_start: bool = False,
) -> tuple[TrainConfig, str, dict | None]:
    """The retraining settings derived from a search run: (TrainConfig, preset name, the
    search's config.json or None).

    ``train_cfg, preset, _ = retrain_defaults(data, "hard", "runs/search/teacher")``

    The search's own training settings (batch size, epochs, ...) when ``search_dir`` holds a
    config.json, with the learning rate and L2 of its search preset for ``selection`` (hard or
    soft: the reference's soft retraining uses tiny rates, as it warm-starts; soft retraining
    from scratch, ``warm_start=False``, uses the hard ones, so that it does train). Without a
    search run: the defaults of TrainConfig and the data's dataset preset (else ``tiny``).
    """
    from .presets import default_preset_name, get_search_preset

    config_path = Path(search_dir) / "config.json" if search_dir is not None else None
    config = None
    if config_path is not None and config_path.is_file():
        config = json.loads(config_path.read_text())
    base = TrainConfig()
    if config is not None:  # the search's own settings (fields of other versions are dropped)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        base = TrainConfig(**{k: v for k, v in config["train"].items() if k in known})
    name = (config or {}).get("preset") or default_preset_name(data.meta)
    preset = get_search_preset(name)
    warm_soft = selection == "soft" and warm_start  # the preset's soft rates assume a warm start
    lr, l2 = preset.retrain_soft if warm_soft else preset.retrain_hard
    return dataclasses.replace(base, lr_emb=lr, lr_nn=lr, l2_emb=l2, l2_nn=l2), name, config


def load_warm_start(run_dir: str | Path, data: PreparedData) -> dict:
    """The supernet weights of a search run, after checking they fit ``data``.

    ``run = retrain(data, genotype, cfg, [0], warm_start=load_warm_start("runs/search/x", data))``
    """
    run_dir = Path(run_dir)
    config_path, weights = run_dir / "config.json", run_dir / "supernet.pt"
    if not config_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: not a search run (config.json/supernet.pt missing)")
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
    genotype: Genotype | SearchResult,
    train_cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    selection: str = "hard",
    warm_start: dict | bool | None = None,
    out_dir: str | Path | None = None,
    callbacks: EventStream | Sequence[Callback] = (),
    metadata: dict | None = None,
) -> SeedsResult:
    """Train the derived model of ``genotype`` once per seed; return a
    :class:`~optfusion_lab.train.SeedsResult` (the trained models, each seed's per-epoch
    history, the per-seed frame and the summary).

    ``run = retrain(data, search_result, TrainConfig(epochs=3), seeds=[0, 1], warm_start=True)``

    ``genotype`` is a :class:`Genotype` or a :class:`SearchResult` (its genotype is used).
    ``warm_start`` starts every seed from a supernet's weights cut down to the derived model
    (the reference default): a supernet state dict (see :func:`load_warm_start`), or True for
    the weights of the given SearchResult's supernet. The starting weights are validated before
    the first epoch (``TrainConfig.validate_start``): when no epoch beats them they are kept
    (``best_epoch`` 0). Without it the model starts from scratch. Which one ran is recorded in
    result.json (``init``). A stop ends the run as in :func:`~optfusion_lab.train.fit_seeds`.
    """
    if isinstance(genotype, SearchResult):
        searched, genotype = genotype, genotype.genotype
        if warm_start is True:
            warm_start = {k: v.detach().cpu() for k, v in searched.network.state_dict().items()}
    elif warm_start is True:
        raise ValueError("warm_start=True takes the weights of a SearchResult; with a Genotype, "
                         "pass the supernet's state dict (load_warm_start)")
    warm = warm_start or None

    def build() -> FusionNetwork:
        model = FusionNetwork.from_genotype(genotype, data.num_features, data.num_fields,
                                            selection)
        if warm is not None:
            model.load_state_dict(supernet_state_for(model, warm))
        return model

    description = {
        "model": f"optfusion-{selection}",
        "model_config": {"selection": selection, "genotype": genotype.to_dict()},
        "init": "warm-start" if warm is not None else "scratch",
    }
    train_cfg = dataclasses.replace(train_cfg, validate_start=warm is not None)
    return fit_seeds(build, description, data, train_cfg, seeds, out_dir, callbacks, metadata)
