"""The OptFusion fusion graph and the derived architecture (the genotype), as plain data.

The graph (DESIGN.md section 2) for ``L`` layers has the nodes, in topological order,

    E, C0, C1, D1, ..., CL, DL, OUT

``E`` is the flat field embedding (B, d); ``C0`` is a shallow block fed by ``E`` alone; layer i has
a shallow block ``Ci`` and a deep block ``Di``, each with the candidate inputs E, C0 and every
block of the layers below; ``OUT`` may take every other node. Every candidate edge has an
architecture weight alpha (edge active when alpha > 0); every *fusion node* (all blocks but C0,
plus OUT) mixes its inputs with candidate operations weighted by softmax(beta).

A :class:`Genotype` is what a search leaves behind: which edges are active and which operation
each node uses, with the raw alpha/beta it came from. It is a frozen, versioned, JSON-round-trip
dataclass with no paths or times in it, so two identical searches give byte-identical files.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..fusion import validate_operation
from ..io import write_text
from ..names import SHALLOW_BLOCKS

GENOTYPE_VERSION = 1


@dataclass(frozen=True)
class FusionGraph:
    """Nodes and candidate edges of the fusion graph with ``num_layers`` layers."""

    num_layers: int

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        layers = [name for i in range(1, self.num_layers + 1) for name in (f"C{i}", f"D{i}")]
        return ("E", "C0", *layers, "OUT")

    @cached_property
    def blocks(self) -> tuple[str, ...]:
        """Nodes that hold a component (every node but E and OUT)."""
        return self.nodes[1:-1]

    @cached_property
    def fusion_nodes(self) -> tuple[str, ...]:
        """Nodes that fuse several candidate inputs (and own a row of beta)."""
        return self.nodes[2:]

    def candidates(self, node: str) -> tuple[str, ...]:
        """The candidate inputs of ``node``, in topological order."""
        if node == "C0":
            return ("E",)
        if node == "OUT":
            return self.nodes[:-1]
        if node not in self.nodes or node == "E":
            raise ValueError(f"{node!r} is not a node with inputs; nodes: {self.nodes}")
        layer = int(node[1:])
        return ("E", "C0", *(n for i in range(1, layer) for n in (f"C{i}", f"D{i}")))

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every candidate edge (src, dst), grouped by destination in topological order."""
        return tuple((src, dst) for dst in self.nodes[1:] for src in self.candidates(dst))

    def live_edges(self, active: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """The ``active`` edges that carry signal from E to OUT, in graph order; empty when OUT
        has no live input. A node is *fed* when one of its active inputs is a fed node (E is
        fed), and *useful* when it feeds OUT through active edges; only edges between fed,
        useful nodes survive."""
        active = set(active)
        fed = {"E"}
        for node in self.nodes[1:]:
            if any((src, node) in active for src in fed):
                fed.add(node)
        useful = {"OUT"}
        for node in reversed(self.nodes[:-1]):
            if any((node, dst) in active for dst in useful):
                useful.add(node)
        alive = fed & useful
        if "OUT" not in alive:
            return ()
        return tuple(e for e in self.edges if e in active and e[0] in alive and e[1] in alive)

    def live_masks(self, active: np.ndarray) -> np.ndarray:
        """:meth:`live_edges` for many edge sets at once: ``active`` is a boolean (N, edges)
        array, one row per set in :attr:`edges` order; returns which of them are live."""
        active = np.asarray(active, dtype=bool)
        index = {node: i for i, node in enumerate(self.nodes)}
        src = np.array([index[s] for s, _ in self.edges])
        dst = np.array([index[d] for _, d in self.edges])
        fed = np.zeros((len(active), len(self.nodes)), dtype=bool)
        fed[:, 0] = True
        for node in range(1, len(self.nodes)):
            into = np.flatnonzero(dst == node)
            fed[:, node] = (active[:, into] & fed[:, src[into]]).any(axis=1)
        useful = np.zeros_like(fed)
        useful[:, -1] = True
        for node in range(len(self.nodes) - 2, -1, -1):
            out = np.flatnonzero(src == node)
            useful[:, node] = (active[:, out] & useful[:, dst[out]]).any(axis=1)
        alive = fed & useful
        live = active & alive[:, src] & alive[:, dst]
        live[~alive[:, -1]] = False
        return live

    @cached_property
    def layer_renamings(self) -> np.ndarray:
        """Every renaming of the layers that maps the search space onto itself: shallow blocks
        C1..CL permuted among themselves, deep blocks D1..DL among themselves (E, C0 and OUT
        fixed). Blocks of one kind are the same module, so a wiring and its renamed copy compute
        the same functions (with their weights moved along, and CONCAT/ATT inputs reordered):
        edges are only identifiable up to these renamings. An (R, edges) integer array: row r
        sends edge i to edge ``row[i]``, or -1 where the renamed edge is not a candidate (a
        wiring using such an edge has no copy under that renaming). Row 0 is the identity."""
        import itertools

        layers = range(1, self.num_layers + 1)
        index = {edge: i for i, edge in enumerate(self.edges)}
        rows = []
        for shallow in itertools.permutations(layers):
            for deep in itertools.permutations(layers):
                name = {"E": "E", "C0": "C0", "OUT": "OUT"}
                name.update({f"C{i}": f"C{j}" for i, j in zip(layers, shallow, strict=True)})
                name.update({f"D{i}": f"D{j}" for i, j in zip(layers, deep, strict=True)})
                rows.append([index.get((name[s], name[d]), -1) for s, d in self.edges])
        return np.array(rows)

    def edge_slice(self, node: str) -> slice:
        """Where the edges into ``node`` sit in :attr:`edges` (and in alpha)."""
        start = next(i for i, (_, dst) in enumerate(self.edges) if dst == node)
        return slice(start, start + len(self.candidates(node)))


@functools.cache
def _graph(num_layers: int) -> FusionGraph:
    """One shared graph per size (its properties are cached on it)."""
    return FusionGraph(num_layers)


def parallel_edges(graph: FusionGraph) -> tuple[tuple[str, str], ...]:
    """The hand-made parallel design: cross chain E->C0->C1..CL beside deep chain E->D1..DL.

    Both chain ends feed OUT (whose operation, CONCAT in the classic design, is chosen apart).
    """
    L = graph.num_layers
    cross = [("E", "C0"), ("C0", "C1")] + [(f"C{i}", f"C{i + 1}") for i in range(1, L)]
    deep = [("E", "D1")] + [(f"D{i}", f"D{i + 1}") for i in range(1, L)]
    return tuple(cross + deep + [(f"C{L}", "OUT"), (f"D{L}", "OUT")])


def stacked_edges(graph: FusionGraph) -> tuple[tuple[str, str], ...]:
    """The hand-made stacked design: E->C0 feeding the deep chain, E->C0->D1->...->DL->OUT."""
    L = graph.num_layers
    deep = [("C0", "D1")] + [(f"D{i}", f"D{i + 1}") for i in range(1, L)]
    return tuple([("E", "C0"), *deep, (f"D{L}", "OUT")])


DESIGNS = {"parallel": parallel_edges, "stacked": stacked_edges}


def _softmax(values: tuple[float, ...]) -> tuple[float, ...]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return tuple(e / sum(exps) for e in exps)


def _check_alpha_by_edge(data: dict) -> None:
    """``alpha_by_edge`` ("src->dst": value) must hold exactly the positional ``alpha``."""
    try:
        graph = FusionGraph(int(data["num_layers"]))
        keyed = {str(k): float(v) for k, v in dict(data["alpha_by_edge"]).items()}
        positional = [float(a) for a in data["alpha"]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid genotype: alpha_by_edge: {exc}") from exc
    names = [f"{src}->{dst}" for src, dst in graph.edges]
    unknown, absent = sorted(set(keyed) - set(names)), [n for n in names if n not in keyed]
    if unknown or absent:
        raise ValueError(f"invalid genotype: alpha_by_edge has unknown edges {unknown} and lacks "
                         f"{absent}")
    if len(positional) == len(names):
        differ = [f"{n} ({keyed[n]} vs {a})" for n, a in zip(names, positional, strict=True)
                  if keyed[n] != a]
        if differ:
            raise ValueError("invalid genotype: alpha_by_edge and alpha disagree on "
                             + ", ".join(differ))


@dataclass(frozen=True)
class NodeChoice:
    """The operation choice of one fusion node."""

    node: str
    operation: str  # the argmax of softmax(beta): used by hard selection
    weights: tuple[float, ...]  # softmax(beta) over the genotype's operations: soft selection


@dataclass(frozen=True)
class Genotype:
    """A derived fusion architecture; see the module docstring. Build models with
    :func:`optfusion_lab.models.supernet.derived_model` (hard or soft selection)."""

    num_fields: int
    embed_dim: int
    num_layers: int
    shallow: str
    operations: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]  # active edges (alpha > 0), in graph order
    nodes: tuple[NodeChoice, ...]  # one per fusion node, in graph order
    alpha: tuple[float, ...]  # raw alpha, one per candidate edge of the graph
    beta: tuple[tuple[float, ...], ...]  # raw beta, one row per fusion node
    version: int = GENOTYPE_VERSION

    def __post_init__(self):
        self.validate()

    @property
    def graph(self) -> FusionGraph:
        return _graph(self.num_layers)

    @classmethod
    def from_arch(
        cls,
        *,
        num_fields: int,
        embed_dim: int,
        num_layers: int,
        shallow: str,
        operations: tuple[str, ...],
        alpha: list[float],
        beta: list[list[float]],
    ) -> Genotype:
        """Derive a genotype from raw architecture parameters: edges alpha > 0, argmax ops."""
        graph = FusionGraph(num_layers)
        alpha_t = tuple(float(a) for a in alpha)
        beta_t = tuple(tuple(float(b) for b in row) for row in beta)
        edges = tuple(e for e, a in zip(graph.edges, alpha_t, strict=True) if a > 0)
        nodes = []
        for node, row in zip(graph.fusion_nodes, beta_t, strict=True):
            weights = _softmax(row)
            best = max(range(len(row)), key=lambda i: (row[i], -i))  # first maximum on ties
            nodes.append(NodeChoice(node, operations[best], weights))
        return cls(num_fields, embed_dim, num_layers, shallow, tuple(operations), edges,
                   tuple(nodes), alpha_t, beta_t)

    # ------------------------------------------------------------ validation

    def validate(self) -> None:
        def fail(message: str):
            raise ValueError(f"invalid genotype: {message}")

        if self.version != GENOTYPE_VERSION:
            fail(f"version {self.version} is not supported (expected {GENOTYPE_VERSION})")
        for name, value in (("num_fields", self.num_fields), ("embed_dim", self.embed_dim),
                            ("num_layers", self.num_layers)):
            if not isinstance(value, int) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}")
        if self.shallow not in SHALLOW_BLOCKS:
            fail(f"shallow block {self.shallow!r} is not one of {SHALLOW_BLOCKS}")
        if not self.operations or len(set(self.operations)) != len(self.operations):
            fail(f"operations must be distinct and non-empty, got {self.operations}")
        for op in self.operations:
            try:
                validate_operation(op)
            except ValueError as exc:
                fail(str(exc))
        graph = self.graph
        if len(self.alpha) != len(graph.edges):
            fail(f"{len(self.alpha)} alpha values for {len(graph.edges)} candidate edges")
        unknown = set(self.edges) - set(graph.edges)
        if unknown:
            fail(f"edges {sorted(unknown)} are not in the {self.num_layers}-layer graph")
        if len(self.beta) != len(graph.fusion_nodes) or any(
            len(row) != len(self.operations) for row in self.beta
        ):
            fail(f"beta must have {len(graph.fusion_nodes)} rows of {len(self.operations)}")
        if tuple(n.node for n in self.nodes) != graph.fusion_nodes:
            fail(f"node choices must cover {graph.fusion_nodes} in order")
        for n in self.nodes:
            if n.operation not in self.operations or len(n.weights) != len(self.operations):
                fail(f"node {n.node}: operation {n.operation!r} / weights do not match operations")
        self._check_consistency(fail)
        if not self.live_edges():
            fail("OUT has no active input: the derived model would predict a constant")

    def _check_consistency(self, fail) -> None:
        """The derived fields must follow from the raw alpha and beta they came from."""
        graph = self.graph
        from_alpha = {e for e, a in zip(graph.edges, self.alpha, strict=True) if a > 0}
        extra = sorted(f"{s}->{d}" for s, d in set(self.edges) - from_alpha)
        if extra:
            fail(f"active edges with alpha <= 0: {', '.join(extra)}")
        missing = sorted(f"{s}->{d}" for s, d in from_alpha - set(self.edges))
        if missing:
            fail(f"edges with alpha > 0 that are not active: {', '.join(missing)}")
        if tuple(self.edges) != tuple(e for e in graph.edges if e in from_alpha):
            fail("active edges must be listed once each, in graph order")
        for choice, row in zip(self.nodes, self.beta, strict=True):
            best = self.operations[max(range(len(row)), key=lambda i: (row[i], -i))]
            if choice.operation != best:
                fail(f"node {choice.node}: operation {choice.operation!r} is not the argmax of "
                     f"its beta {list(row)} ({best!r})")
            expected = _softmax(row)
            if any(abs(w - e) > 1e-6 for w, e in zip(choice.weights, expected, strict=True)):
                fail(f"node {choice.node}: weights {list(choice.weights)} are not softmax(beta) "
                     f"= {[round(e, 6) for e in expected]}")

    # ------------------------------------------------------------ derived structure

    def live_edges(self) -> tuple[tuple[str, str], ...]:
        """Active edges that carry signal from E to OUT; everything else is pruned
        (:meth:`FusionGraph.live_edges`)."""
        return self.graph.live_edges(self.edges)

    def inputs_of(self, node: str) -> tuple[str, ...]:
        """The live inputs of ``node`` in the derived model, in candidate order."""
        return tuple(src for src, dst in self.live_edges() if dst == node)

    def live_blocks(self) -> tuple[str, ...]:
        live = {dst for _, dst in self.live_edges()}
        return tuple(n for n in self.graph.blocks if n in live)

    def choice(self, node: str) -> NodeChoice:
        return next(n for n in self.nodes if n.node == node)

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        d = asdict(self)
        d["edges"] = [list(e) for e in self.edges]
        d["nodes"] = [
            {"node": n.node, "operation": n.operation, "weights": list(n.weights)}
            for n in self.nodes
        ]
        d["operations"] = list(self.operations)
        d["alpha"] = list(self.alpha)  # positional: one per candidate edge, in graph order
        names = [f"{src}->{dst}" for src, dst in self.graph.edges]
        d["alpha_by_edge"] = dict(zip(names, self.alpha, strict=True))  # the same, keyed by edge
        d["beta"] = [list(row) for row in self.beta]
        return {"format": "optfusion-genotype", **d}

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        if not isinstance(data, dict) or data.get("format") != "optfusion-genotype":
            raise ValueError("invalid genotype: not an optfusion-genotype document")
        keys = {"num_fields", "embed_dim", "num_layers", "shallow", "operations", "edges",
                "nodes", "alpha", "beta", "version"}
        missing = keys - set(data)
        if missing:
            raise ValueError(f"invalid genotype: missing {sorted(missing)}")
        if "alpha_by_edge" in data:  # optional (older files lack it); must match alpha
            _check_alpha_by_edge(data)
        try:
            return cls(
                num_fields=data["num_fields"],
                embed_dim=data["embed_dim"],
                num_layers=data["num_layers"],
                shallow=data["shallow"],
                operations=tuple(data["operations"]),
                edges=tuple((str(s), str(d)) for s, d in data["edges"]),
                nodes=tuple(
                    NodeChoice(n["node"], n["operation"], tuple(float(w) for w in n["weights"]))
                    for n in data["nodes"]
                ),
                alpha=tuple(float(a) for a in data["alpha"]),
                beta=tuple(tuple(float(b) for b in row) for row in data["beta"]),
                version=data["version"],
            )
        except (TypeError, KeyError) as exc:
            raise ValueError(f"invalid genotype: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the genotype as JSON to ``path`` (atomically); return the path."""
        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON genotype ({exc})") from exc
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def _repr_html_(self) -> str:
        """A notebook shows a genotype as its fusion-graph diagram (plotly.js embedded, so it
        renders offline; see :func:`optfusion_lab.viz.fusion_diagram`)."""
        from ..viz import diagram_html

        return diagram_html(self)

    def __str__(self) -> str:
        live = set(self.live_edges())
        lines = [
            f"Genotype v{self.version}: {self.num_layers} layers, shallow={self.shallow}, "
            f"F={self.num_fields}, D={self.embed_dim}, ops={','.join(self.operations)}"
        ]
        for node in self.graph.nodes[1:]:
            inputs = [src for src, dst in self.edges if dst == node]
            shown = ", ".join(s if (s, node) in live else f"({s})" for s in inputs) or "-"
            line = f"  {node:<4}<- {shown}"
            if node != "C0":
                n = self.choice(node)
                mix = " ".join(f"{o} {w:.2f}" for o, w in zip(self.operations, n.weights,
                                                             strict=True))
                line = f"{line:<40} {n.operation:<7} [{mix}]"
            lines.append(line)
        lines.append("  (inputs in parentheses are active but pruned: they do not reach OUT)")
        return "\n".join(lines)

