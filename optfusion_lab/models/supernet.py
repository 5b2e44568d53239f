"""The OptFusion supernet and the models derived from it: one class for every mode.

:class:`FusionNetwork` runs the fusion graph of :mod:`.genotype` in one of four modes:

- ``search``: every candidate edge, gated by a straight-through estimator of alpha
  (forward ``1[alpha > 0]``, backward identity), and every candidate operation, mixed by
  softmax(beta). alpha and beta are the architecture parameters.
- ``fixed-edges``: a fixed set of edges (e.g. the hand-made parallel or stacked designs) with the
  operations still learned by beta.
- ``hard``: built from a :class:`~.genotype.Genotype`: only live edges, one operation per node
  (the argmax), nothing else allocated.
- ``soft``: as ``hard`` but every operation is kept and mixed with the fixed softmax(beta)
  weights of the genotype.

The fixed single-operation ablation (ADD-only, ...) is ``search`` with one operation. A search
network can also mix every node with one fixed operation for a while, leaving beta untouched
(:meth:`FusionNetwork.fix_operation`; the sequential search learns its connections so, with ADD).

Semantics shared by every mode (where we deliberately differ from the reference code):

- PROD multiplies the active inputs only (see :class:`~optfusion_lab.fusion.ProdFusion`).
- A node is *fed* when one of its active inputs comes from a fed node (E is fed). An input from
  a node that is not fed counts as inactive, and a node that is not fed (a *dead* node) outputs
  zeros. A derived model removes such nodes with their outgoing edges, so search and derived
  outputs agree.
- Dead nodes are zero in the forward pass only. The ``fed`` flag and the fusion's any-active flag
  are straight-through masks (:func:`~optfusion_lab.fusion.straight_through_mask`): the backward
  pass runs as if the node were fed, so the gates of its inputs keep their gradient (the
  straight-through estimator's ``d gate / d alpha = 1`` then reaches alpha) and a switched-off
  edge can switch back on. With constant flags one bad step would prune a node forever, and
  OUT could lose every input. Where no node is dead both give the same gradients (a test checks
  it). The dead node's block and fusion weights receive the gradient of that "as if fed" pass
  too (the reference's blocks keep a bias output, so its dead nodes are not silent either).
- A derived model also prunes nodes that do not reach OUT (the reference computes them anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..components import CINLayer, CrossLayerV1, CrossLayerV2, FeatureEmbedding
from ..fusion import (
    OPERATIONS,
    MixedFusion,
    stack_attention_nets,
    straight_through_gate,
    straight_through_mask,
    validate_operation,
)
from ..names import BETA_INITS
from .genotype import SHALLOW_BLOCKS, FusionGraph, Genotype

MODES = ("search", "fixed-edges", "hard", "soft")


@dataclass(frozen=True)
class SupernetConfig:
    """Sizes and initialisation of the fusion graph; the data gives features and fields."""

    embed_dim: int = 16  # D; every block works at width d = F * D
    num_layers: int = 3  # L, the number of (shallow, deep) layers above C0 (reference: 3)
    shallow: str = "cross"  # shallow block: cross (DCN v1), crossv2 (DCN-V2) or cin
    operations: tuple[str, ...] = OPERATIONS  # candidate fusion operations, in beta's order
    alpha_init: float = 0.5  # constant init of every edge's alpha (> 0: every edge starts on);
    # the reference uses 0.5
    beta_init: str = "xavier"  # "xavier": each node's own (1, ops) beta row ~ Xavier normal, std
    # sqrt(2 / (1 + ops)) = 0.63 for 4 ops (the reference); "uniform": beta = 0, every node starts
    # with equal operation weights; "normal": N(0, beta_init_std) for every entry
    beta_init_std: float = 0.1  # std of beta_init="normal" (unused otherwise)
    embed_init_std: float = 0.01  # embedding init N(0, std), as in the reference

    def __post_init__(self):
        if self.embed_dim < 1 or self.num_layers < 1:
            raise ValueError("embed_dim and num_layers must be positive")
        if self.shallow not in SHALLOW_BLOCKS:
            raise ValueError(f"unknown shallow block {self.shallow!r}; choose {SHALLOW_BLOCKS}")
        if not self.operations or len(set(self.operations)) != len(self.operations):
            raise ValueError(f"operations must be distinct and non-empty: {self.operations}")
        for op in self.operations:
            validate_operation(op)
        if not math.isfinite(self.alpha_init):
            raise ValueError(f"alpha_init must be a finite number, got {self.alpha_init}")
        if self.beta_init not in BETA_INITS:
            raise ValueError(f"unknown beta_init {self.beta_init!r}; choose one of {BETA_INITS}")
        if not self.beta_init_std > 0:
            raise ValueError(f"beta_init_std must be > 0, got {self.beta_init_std}")


class DeepBlock(nn.Module):
    """A deep layer: ``ReLU(W x + b)`` at width d (``x0`` unused; same call as cross layers)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))  # (B, d)


class CINBlock(nn.Module):
    """A CIN layer with hidden size F, so its output keeps the flat width d = F * D."""

    def __init__(self, num_fields: int, embed_dim: int):
        super().__init__()
        self.num_fields, self.embed_dim = num_fields, embed_dim
        self.layer = CINLayer(num_fields, num_fields, num_fields)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], self.num_fields, self.embed_dim)
        out = self.layer(x0.view(shape), x.view(shape))  # (B, F, D)
        return out.flatten(start_dim=1)  # (B, d)


def init_beta(beta: torch.Tensor, cfg: SupernetConfig) -> None:
    """Fill ``beta`` (fusion nodes, ops) in place as ``cfg.beta_init`` says (see SupernetConfig).

    "xavier" draws every node's row as its own (1, ops) tensor, as the reference does, so its
    std is sqrt(2 / (1 + ops)) whatever the number of nodes (one (nodes, ops) Xavier tensor would
    have std sqrt(2 / (nodes + ops)), which shrinks as the graph grows).
    """
    with torch.no_grad():
        if cfg.beta_init == "uniform":
            beta.zero_()
        elif cfg.beta_init == "normal":
            beta.normal_(0.0, cfg.beta_init_std)
        else:
            for row in beta:
                nn.init.xavier_normal_(row.view(1, -1))  # (1, ops): fan_in ops, fan_out 1


def build_block(node: str, shallow: str, num_fields: int, embed_dim: int) -> nn.Module:
    d = num_fields * embed_dim
    if node.startswith("D"):
        return DeepBlock(d)
    if shallow == "cross":
        return CrossLayerV1(d)
    if shallow == "crossv2":
        return CrossLayerV2(d)
    if shallow == "cin":
        return CINBlock(num_fields, embed_dim)
    raise ValueError(f"unknown shallow block {shallow!r}; choose one of {SHALLOW_BLOCKS}")


class FusionNetwork(nn.Module):
    """The fusion graph as a CTR model: (B, F) global ids -> logits (B,). See module docstring.

    Build a search supernet with ``FusionNetwork(num_features, num_fields, cfg)``, a fixed-edge
    design with ``mode="fixed-edges", edges=...``, and a derived model with
    :meth:`from_genotype`.
    """

    def __init__(
        self,
        num_features: int,
        num_fields: int,
        cfg: SupernetConfig,
        *,
        mode: str = "search",
        edges: tuple[tuple[str, str], ...] | None = None,
        genotype: Genotype | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.mode, self.cfg, self.num_fields = mode, cfg, num_fields
        self.graph = graph = FusionGraph(cfg.num_layers)
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)

        if mode in ("search", "fixed-edges"):
            self.inputs = {n: graph.candidates(n) for n in graph.nodes[1:]}
            operations = {n: cfg.operations for n in graph.fusion_nodes}
        else:
            if genotype is None:
                raise ValueError(f"mode {mode!r} needs a genotype")
            self.inputs = {n: genotype.inputs_of(n) for n in (*genotype.live_blocks(), "OUT")}
            operations = {
                n: (genotype.choice(n).operation,) if mode == "hard" else genotype.operations
                for n in self.inputs
                if n != "C0"
            }
        self.operations = operations
        self.blocks = nn.ModuleDict(
            {n: build_block(n, cfg.shallow, num_fields, cfg.embed_dim) for n in self.inputs
             if n != "OUT"}
        )
        self.fusions = nn.ModuleDict(
            {n: MixedFusion(len(self.inputs[n]), d, operations[n]) for n in operations}
        )
        self.output = nn.Linear(d, 1)

        if mode == "search":
            self.alpha = nn.Parameter(torch.full((len(graph.edges),), float(cfg.alpha_init)))
        elif mode == "fixed-edges":
            if not edges:
                raise ValueError("mode 'fixed-edges' needs the edges of the design")
            unknown = set(edges) - set(graph.edges)
            if unknown:
                raise ValueError(f"edges {sorted(unknown)} are not in the graph")
            mask = [1.0 if e in set(edges) else 0.0 for e in graph.edges]
            self.register_buffer("edge_mask", torch.tensor(mask))
        if mode in ("search", "fixed-edges"):
            self.beta = nn.Parameter(torch.empty(len(graph.fusion_nodes), len(cfg.operations)))
            init_beta(self.beta, cfg)
        elif mode == "soft":
            weights = [list(genotype.choice(n).weights) for n in self.fusions]
            self.register_buffer("soft_weights", torch.tensor(weights))
        # Search modes: None mixes with softmax(beta); an operation's name mixes every node with
        # that operation alone (one-hot weights). Set it with fix_operation(); not saved in
        # state_dict, since it is a phase of a search, not part of the architecture.
        self.fixed_operation: str | None = None

    @classmethod
    def from_genotype(
        cls, genotype: Genotype, num_features: int, num_fields: int, selection: str = "hard"
    ) -> FusionNetwork:
        """The derived model of ``genotype`` for data with ``num_fields`` fields."""
        if selection not in ("hard", "soft"):
            raise ValueError(f"selection must be 'hard' or 'soft', got {selection!r}")
        if num_fields != genotype.num_fields:
            raise ValueError(
                f"the genotype was searched on data with {genotype.num_fields} fields; "
                f"this data has {num_fields}"
            )
        cfg = SupernetConfig(
            embed_dim=genotype.embed_dim,
            num_layers=genotype.num_layers,
            shallow=genotype.shallow,
            operations=genotype.operations,
        )
        return cls(num_features, num_fields, cfg, mode=selection, genotype=genotype)

    # ------------------------------------------------------------ parameters

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha (search) and beta (search, fixed-edges); empty for derived models."""
        return [p for p in (getattr(self, "alpha", None), getattr(self, "beta", None))
                if isinstance(p, nn.Parameter)]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def edge_gates(self) -> torch.Tensor:
        """0/1 gate of every candidate edge (search: straight-through estimator of alpha)."""
        if self.mode == "search":
            return straight_through_gate(self.alpha)
        return self.edge_mask

    def fix_operation(self, name: str | None) -> None:
        """Mix every fusion node with operation ``name`` alone; ``None`` goes back to softmax(beta).

        While an operation is fixed, :meth:`operation_weights` is one-hot on it, so beta takes
        no part in the forward pass: it receives no gradient and keeps its value. The genotype
        is still derived from beta (:meth:`genotype`), so release the operation before deriving.
        """
        if self.mode not in ("search", "fixed-edges"):
            raise ValueError(f"a {self.mode!r} network has no operations to fix")
        if name is not None and name not in self.cfg.operations:
            raise ValueError(
                f"cannot fix operation {name!r}: the candidates are {self.cfg.operations}"
            )
        self.fixed_operation = name

    def operation_weights(self) -> torch.Tensor:
        """(fusion nodes, operations) mixing weights: softmax(beta) in search modes, or one-hot
        on the fixed operation (see :meth:`fix_operation`)."""
        if self.fixed_operation is not None:
            one_hot = torch.zeros_like(self.beta, requires_grad=False)  # (fusion nodes, ops)
            one_hot[:, self.cfg.operations.index(self.fixed_operation)] = 1.0
            return one_hot
        return torch.softmax(self.beta, dim=-1)

    def genotype(self) -> Genotype:
        """The derived architecture of a search-mode network (edges alpha > 0, argmax ops)."""
        if self.mode not in ("search", "fixed-edges"):
            raise ValueError("only search and fixed-edges networks have a genotype to derive")
        alpha = (self.alpha if self.mode == "search" else self.edge_mask * 2 - 1).detach()
        return Genotype.from_arch(
            num_fields=self.num_fields,
            embed_dim=self.cfg.embed_dim,
            num_layers=self.cfg.num_layers,
            shallow=self.cfg.shallow,
            operations=self.cfg.operations,
            alpha=alpha.cpu().tolist(),
            beta=self.beta.detach().cpu().tolist(),
        )

    # ------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        searching = self.mode in ("search", "fixed-edges")
        if searching:
            all_gates = self.edge_gates()  # (num_edges,)
            all_weights = self.operation_weights()  # (fusion nodes, ops)
        one = e.new_ones(())
        h, fed = {"E": e}, {"E": one}
        for node in (n for n in self.graph.nodes[1:] if n in self.inputs):
            sources = self.inputs[node]
            from_fed = None
            if searching:
                gates = all_gates[self.graph.edge_slice(node)]  # (k,)
                # An input from a node that is not fed counts as inactive.
                from_fed = torch.stack([fed[s] for s in sources])  # (k,) constant 0/1
                fed[node] = ((gates.detach() * from_fed) > 0).any().to(e.dtype)
            else:
                gates = e.new_ones(len(sources))  # derived: only live inputs remain
                fed[node] = one
            if node == "C0":
                fused = gates[0] * e  # (B, d): C0's single input (E, always fed), no operation
            else:
                weights = self._weights(node, all_weights if searching else None)  # (ops,)
                inputs = [h[s] for s in sources]  # k tensors (B, d), gated by the fusion
                fused = self.fusions[node](inputs, gates, weights, from_fed)  # (B, d)
            if node == "OUT":
                return self.output(fused).squeeze(-1)  # (B,)
            # (B, d); zeros if not fed, but the backward pass goes on as if it were fed, so the
            # gates of a dead node's inputs keep learning (see the module docstring).
            h[node] = straight_through_mask(self.blocks[node](e, fused), fed[node])
        raise AssertionError("the graph has no OUT node")

    def _weights(self, node: str, all_weights: torch.Tensor | None) -> torch.Tensor:
        if all_weights is not None:
            return all_weights[self.graph.fusion_nodes.index(node)]
        if self.mode == "soft":
            return self.soft_weights[list(self.fusions).index(node)]
        return self.output.weight.new_ones(1)  # hard: the single chosen operation


# ---------------------------------------------------------------- warm start


def supernet_state_for(derived: FusionNetwork, supernet_state: dict) -> dict:
    """The weights of a supernet, cut down to the live inputs and operations of ``derived``.

    The result loads into ``derived`` with ``load_state_dict(strict=True)``; the output of the
    derived model then equals the supernet's with the same edges and one-hot (hard) or fixed
    (soft) operation weights. Shapes that do not match (other data, other sizes) are a clear
    error.
    """
    graph = derived.graph
    supernet_state = stack_attention_nets(dict(supernet_state))  # older files: per-input nets
    state = {}
    for key, target in derived.state_dict().items():
        if key == "soft_weights":  # comes from the genotype, not from the supernet
            state[key] = target
            continue
        source = supernet_state.get(key)
        if source is None:
            raise ValueError(f"warm start: the supernet has no weights for {key}")
        parts = key.split(".")
        if parts[0] == "fusions":  # fusions.<node>.ops.<op>.<parameter>
            node, op = parts[1], parts[3]
            keep = [graph.candidates(node).index(s) for s in derived.inputs[node]]
            if parts[4] in ("w1", "b1", "w2"):  # ATT's stacked nets (k, ...): live inputs
                source = source[keep]
            elif op == "concat" and parts[-1] == "weight":  # (d, k*d) -> live input blocks
                d = source.shape[0]
                k = source.shape[1] // d
                source = source.view(d, k, d)[:, keep].reshape(d, len(keep) * d)
        if source.shape != target.shape:
            raise ValueError(
                f"warm start: {key} has shape {tuple(source.shape)} in the supernet but "
                f"{tuple(target.shape)} here (different data or sizes?)"
            )
        state[key] = source.clone()
    return state
