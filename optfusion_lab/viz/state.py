"""What a fusion-graph figure draws: :class:`FusionState`, one snapshot of a fusion graph.

A genotype is only one of the things worth drawing. A supernet in the middle of a search (whose
OUT may have lost every input), a snapshot of the architecture history, and the hand-made designs
are drawn the same way, so every drawing function takes any of them and turns it into a
:class:`FusionState` with :func:`state_of`. Unlike :class:`~optfusion_lab.models.genotype.Genotype`
a state is never invalid because of its edges: dead nodes and a dead OUT are states to draw.

Vocabulary (as in :mod:`optfusion_lab.models.supernet`): an edge is *on* (active) when its alpha is
> 0 (or when a fixed design has it); a node is *fed* when one of its active inputs comes from a
fed node (E is fed) and *useful* when it reaches OUT through active edges; *live* nodes are fed
and useful, and *live* edges are active edges between live nodes: the derived model keeps exactly
those. An active edge that is not live is *pruned*; an edge that is not active is *off*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from ..models.genotype import FusionGraph, Genotype, parallel_edges, stacked_edges

Edge = tuple[str, str]
# Candidate operations of the hand-made designs, in the supernet's default order.
DESIGN_OPERATIONS = ("add", "prod", "concat", "att")


@dataclass(frozen=True)
class FusionState:
    """A fusion graph with its switched-on edges, raw alpha and per-node operation weights."""

    num_layers: int
    operations: tuple[str, ...]  # candidate operations, in the order of each weights row
    active: tuple[Edge, ...]  # edges switched on (alpha > 0, or a fixed design's edges)
    alpha: tuple[float, ...] | None  # raw alpha per candidate edge in graph order; None: fixed
    weights: tuple[tuple[float, ...], ...] | None  # one row per fusion node; None: unknown
    shallow: str = "cross"  # the shallow block of C0..CL (cross, crossv2, cin)
    name: str = ""  # shown in titles and comparisons

    def __post_init__(self):
        graph = self.graph
        unknown = set(self.active) - set(graph.edges)
        if unknown:
            raise ValueError(f"edges {sorted(unknown)} are not in the {self.num_layers}-layer "
                             "fusion graph")  # fmt: skip
        if self.alpha is not None and len(self.alpha) != len(graph.edges):
            raise ValueError(f"{len(self.alpha)} alpha values for {len(graph.edges)} candidate "
                             "edges")  # fmt: skip
        if self.weights is not None and (
            len(self.weights) != len(graph.fusion_nodes)
            or any(len(row) != len(self.operations) for row in self.weights)
        ):
            raise ValueError(f"weights must have {len(graph.fusion_nodes)} rows of "
                             f"{len(self.operations)} (one per operation)")  # fmt: skip

    @property
    def graph(self) -> FusionGraph:
        return FusionGraph(self.num_layers)

    # ------------------------------------------------------------ liveness

    @cached_property
    def fed(self) -> frozenset[str]:
        """Nodes with an active input from a fed node (E is fed)."""
        active, fed = set(self.active), {"E"}
        for node in self.graph.nodes[1:]:
            if any((src, node) in active for src in fed):
                fed.add(node)
        return frozenset(fed)

    @cached_property
    def useful(self) -> frozenset[str]:
        """Nodes that reach OUT through active edges (OUT is useful)."""
        active, useful = set(self.active), {"OUT"}
        for node in reversed(self.graph.nodes[:-1]):
            if any((node, dst) in active for dst in useful):
                useful.add(node)
        return frozenset(useful)

    @cached_property
    def live_nodes(self) -> tuple[str, ...]:
        """Fed and useful nodes, in graph order; empty when OUT has no live input."""
        alive = self.fed & self.useful
        if "OUT" not in alive:
            return ()
        return tuple(n for n in self.graph.nodes if n in alive)

    @cached_property
    def live_edges(self) -> tuple[Edge, ...]:
        """Active edges between live nodes, in graph order (what the derived model keeps)."""
        live, active = set(self.live_nodes), set(self.active)
        return tuple(e for e in self.graph.edges if e in active and e[0] in live and e[1] in live)

    @property
    def out_is_dead(self) -> bool:
        return not self.live_nodes

    def edge_status(self, edge: Edge) -> str:
        """``live``, ``pruned`` (active, but not live) or ``off``."""
        if edge in self.live_edges:
            return "live"
        return "pruned" if edge in self.active else "off"

    def node_status(self, node: str) -> str:
        """``live``, ``not fed`` (no active input from a fed node) or ``does not reach OUT``."""
        if node in self.live_nodes:
            return "live"
        if node not in self.fed:
            return "not fed"
        return "does not reach OUT" if node != "OUT" else "not fed"

    # ------------------------------------------------------------ numbers

    def alpha_of(self, edge: Edge) -> float | None:
        if self.alpha is None:
            return None
        return self.alpha[self.graph.edges.index(edge)]

    def weights_of(self, node: str) -> tuple[float, ...] | None:
        """The operation weights of a fusion node (None for E, C0 or unknown weights)."""
        if self.weights is None or node not in self.graph.fusion_nodes:
            return None
        return self.weights[self.graph.fusion_nodes.index(node)]

    def operation_of(self, node: str) -> str | None:
        """The chosen operation of a fusion node: the first maximum of its weights (None when it
        has none, e.g. a node a derived model removed)."""
        weights = self.weights_of(node)
        if weights is None or max(weights) <= 0:
            return None
        best = max(range(len(weights)), key=lambda i: (weights[i], -i))
        return self.operations[best]

    def block_of(self, node: str) -> str:
        """What a node computes, in words."""
        if node == "E":
            return "embedding"
        if node == "OUT":
            return "output"
        return self.shallow if node.startswith("C") else "deep"


# ---------------------------------------------------------------- building states


def from_genotype(genotype: Genotype, name: str = "") -> FusionState:
    return FusionState(
        num_layers=genotype.num_layers,
        operations=tuple(genotype.operations),
        active=tuple(genotype.edges),
        alpha=tuple(genotype.alpha),
        weights=tuple(tuple(n.weights) for n in genotype.nodes),
        shallow=genotype.shallow,
        name=name,
    )


def from_network(network, name: str = "") -> FusionState:
    """The current state of a :class:`~optfusion_lab.models.supernet.FusionNetwork`.

    A search network gives its alpha and mixing weights as they are now (mid-search: a dead node
    or a dead OUT is fine); a fixed-edges network its design's edges; a derived (hard or soft)
    network its live edges and its operations.
    """
    graph, cfg = network.graph, network.cfg
    if network.mode == "search":
        alpha = tuple(float(a) for a in network.alpha.detach().cpu().tolist())
        active = tuple(e for e, a in zip(graph.edges, alpha, strict=True) if a > 0)
    elif network.mode == "fixed-edges":
        alpha = None
        mask = network.edge_mask.detach().cpu().tolist()
        active = tuple(e for e, m in zip(graph.edges, mask, strict=True) if m > 0)
    else:  # hard / soft derived models hold their live inputs only
        alpha = None
        active = tuple(e for e in graph.edges if e[0] in network.inputs.get(e[1], ()))
    if network.mode in ("search", "fixed-edges"):
        weights = tuple(tuple(row) for row in network.operation_weights().detach().cpu().tolist())
    else:
        rows = []
        for node in graph.fusion_nodes:
            used = network.operations.get(node, ())
            if network.mode == "soft" and node in network.fusions:
                soft = network.soft_weights[list(network.fusions).index(node)].tolist()
                rows.append(tuple(float(w) for w in soft))
            else:
                rows.append(tuple(1.0 if op in used else 0.0 for op in cfg.operations))
        weights = tuple(rows)
    return FusionState(graph.num_layers, tuple(cfg.operations), active, alpha, weights,
                       cfg.shallow, name)  # fmt: skip


def layers_in(nodes: Sequence[str]) -> int:
    """The number of layers L of a graph, from node names seen in it (C1..CL, D1..DL)."""
    layers = [int(n[1:]) for n in nodes if n[:1] in ("C", "D") and n[1:].isdigit()]
    if not layers or max(layers) < 1:
        raise ValueError(f"cannot tell the number of layers from the nodes {sorted(set(nodes))}")
    return max(layers)


def from_history(
    history: pd.DataFrame, step: int | None = None, shallow: str = "cross", name: str = ""
) -> FusionState:
    """The architecture recorded at ``step`` (default: the last record) of a tidy history.

    ``history`` has the columns of :data:`optfusion_lab.fusion_search.HISTORY_COLUMNS`
    (``history.csv`` of a search run). A history without alpha rows (a fixed design) gives every
    candidate edge on, with ``alpha`` None; pass the design instead to draw its edges.
    """
    frame = _one_run(history)
    if frame.empty:
        raise ValueError("the architecture history is empty")
    steps = frame["step"]
    at = int(steps.iloc[-1]) if step is None else int(step)
    if at not in set(steps):
        raise ValueError(f"no record at step {at}; recorded steps run from {steps.min()} to "
                         f"{steps.max()}")  # fmt: skip
    # The last record at that step (a phase end and the next phase's start can share a step).
    order = frame.assign(_row=range(len(frame)))
    snap_rows = order[order["step"] == at]
    last = snap_rows.groupby(["kind", "node", "input", "operation"], sort=False).tail(1)
    num_layers = layers_in(frame["node"].astype(str).unique())
    graph = FusionGraph(num_layers)
    alphas = last[last["kind"] == "alpha"]
    if len(alphas):
        by_edge = {(str(r.input), str(r.node)): float(r.value) for r in alphas.itertuples()}
        missing = [e for e in graph.edges if e not in by_edge]
        if missing:
            raise ValueError(f"the history has no alpha for edges {missing[:3]}... at step {at}")
        alpha = tuple(by_edge[e] for e in graph.edges)
        active = tuple(e for e, a in zip(graph.edges, alpha, strict=True) if a > 0)
    else:
        alpha, active = None, graph.edges
    weight_rows = last[last["kind"] == "weight"]
    operations = tuple(dict.fromkeys(weight_rows["operation"].astype(str)))
    by_op = {(str(r.node), str(r.operation)): float(r.value) for r in weight_rows.itertuples()}
    weights = None
    if operations:
        weights = tuple(tuple(by_op.get((n, op), 0.0) for op in operations)
                        for n in graph.fusion_nodes)  # fmt: skip
    return FusionState(num_layers, operations or DESIGN_OPERATIONS, active, alpha, weights,
                       shallow, name)  # fmt: skip


def _one_run(history: pd.DataFrame) -> pd.DataFrame:
    """``history`` with a clear error when it mixes several seeds."""
    missing = {"step", "kind", "node", "input", "operation", "value"} - set(history.columns)
    if missing:
        raise ValueError(f"not an architecture history: columns {sorted(missing)} are missing")
    if "seed" in history.columns and history["seed"].nunique() > 1:
        raise ValueError("the history holds several seeds; select one, e.g. "
                         "history[history.seed == 0]")  # fmt: skip
    return history.fillna({"input": "", "operation": ""}).reset_index(drop=True)


# ---------------------------------------------------------------- hand-made designs


def _deep_chain(graph: FusionGraph) -> tuple[Edge, ...]:
    L = graph.num_layers
    return (("E", "D1"), *((f"D{i}", f"D{i + 1}") for i in range(1, L)), (f"D{L}", "OUT"))


@dataclass(frozen=True)
class HandMade:
    """A hand-made design as a point of the fusion space."""

    edges: Callable[[FusionGraph], tuple[Edge, ...]]
    shallow: str  # the shallow block it uses
    out_operation: str  # how OUT merges its inputs (every other node has a single input)
    about: str  # what it is, in words


HAND_MADE = {
    "parallel": HandMade(parallel_edges, "cross", "concat",
                         "cross chain beside deep chain, concatenated at OUT"),
    "stacked": HandMade(stacked_edges, "cross", "add", "E -> C0 feeding the deep chain"),
    "dnn": HandMade(_deep_chain, "cross", "add", "FNN: the deep chain alone"),
    "dcn": HandMade(parallel_edges, "cross", "concat",
                    "DCN: CrossNet v1 beside an MLP, concatenated (the parallel design)"),
    "dcnv2-parallel": HandMade(parallel_edges, "crossv2", "concat",
                               "DCN-V2 parallel: CrossNet v2 beside an MLP, concatenated"),
    "dcnv2-stacked": HandMade(stacked_edges, "crossv2", "add",
                              "DCN-V2 stacked: a CrossNet v2 layer feeding an MLP"),
}  # fmt: skip


def hand_made(design: str, num_layers: int = 3, operations: Sequence[str] = DESIGN_OPERATIONS,
              name: str = "") -> FusionState:  # fmt: skip
    """A hand-made design (:data:`HAND_MADE`) drawn as a point of the fusion space.

    Its edges are fixed (``alpha`` None); every fusion node uses ADD (an identity on its single
    input) except OUT, which uses the design's own merge (CONCAT for the parallel designs).
    """
    if design not in HAND_MADE:
        raise ValueError(f"unknown hand-made design {design!r}; choose one of {list(HAND_MADE)}")
    spec, graph = HAND_MADE[design], FusionGraph(num_layers)
    operations = tuple(operations)
    for op in ("add", spec.out_operation):
        if op not in operations:
            raise ValueError(f"design {design!r} needs operation {op!r} among {operations}")

    def one_hot(op: str) -> tuple[float, ...]:
        return tuple(1.0 if o == op else 0.0 for o in operations)

    weights = tuple(one_hot(spec.out_operation if n == "OUT" else "add")
                    for n in graph.fusion_nodes)  # fmt: skip
    return FusionState(num_layers, operations, spec.edges(graph), None, weights, spec.shallow,
                       name or design)  # fmt: skip


def state_of(source, name: str | None = None) -> FusionState:
    """Any drawable thing as a :class:`FusionState`: a state, a :class:`Genotype`, a
    ``FusionNetwork``, a tidy architecture history (its last record) or a hand-made design's
    name (:data:`HAND_MADE`, with 3 layers; call :func:`hand_made` for other sizes)."""
    if isinstance(source, FusionState):
        state = source
    elif isinstance(source, Genotype):
        state = from_genotype(source)
    elif isinstance(source, str):
        state = hand_made(source)
    elif isinstance(source, pd.DataFrame):
        state = from_history(source)
    elif hasattr(source, "arch_parameters") and hasattr(source, "graph"):
        state = from_network(source)
    else:
        raise TypeError(f"cannot draw a {type(source).__name__}: pass a Genotype, a "
                        "FusionNetwork, an architecture history, a design name or a "
                        "FusionState")  # fmt: skip
    if name is not None and name != state.name:
        state = FusionState(state.num_layers, state.operations, state.active, state.alpha,
                            state.weights, state.shallow, name)  # fmt: skip
    return state
