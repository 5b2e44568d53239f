"""Fusion operations of a node with k candidate inputs (DESIGN.md section 2).

Every operation has the same call: ``op(inputs, gates) -> (B, d)`` where

- ``inputs`` is a tensor (k, B, d) or a list of k tensors (B, d);
- ``gates`` is a tensor (k,) of 0/1 values, possibly straight-through (float, with gradient);
- ``sources_fed`` (optional, the supernet's) is a tensor (k,) of 0/1 constants: an input from a
  source that is not fed counts as inactive.

The gating is defined once, in :func:`~optfusion_lab.fusion.gated.gate_inputs`: input j enters
as ``g_j * x_j``, the operation's own formula (``fuse``) is applied to these gated inputs (which
:class:`~optfusion_lab.fusion.gated.GatedInputs` computes without a gated copy of the inputs),
and a node with no active input outputs zeros under every operation. Those zeros are a
straight-through mask (:func:`~optfusion_lab.fusion.gates.straight_through_mask`): the gradient
still reaches the gates as if an input were active, so a node whose inputs are all off can switch
one back on.
"""

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from optfusion_lab.fusion.gated import GatedInputs, gate_inputs
from optfusion_lab.fusion.gates import straight_through_mask
from optfusion_lab.names import OPERATIONS  # noqa: F401 (re-exported)

# OPERATIONS: the paper's candidate operations, in the order of beta's columns (the default
# everywhere). The registry below also holds "att-lite", a cheaper ATT a user may choose.


class FusionOp(nn.Module):
    """Base class: gate the inputs, apply ``fuse``, output zeros when no gate is active (with a
    straight-through backward, see the module docstring)."""

    reads = "stack"  # what fuse() reads of the gated inputs: "sum", "product" or "stack"

    def __init__(self, num_inputs: int, dim: int):
        super().__init__()
        self.num_inputs = num_inputs
        self.dim = dim

    def forward(
        self,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        gates: torch.Tensor,
        sources_fed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        gated = gate_inputs(inputs, gates, self.num_inputs, self.dim, sources_fed, {self.reads})
        return straight_through_mask(self.fuse(gated), gated.any_active)  # (B, d)

    def fuse(self, gated: GatedInputs) -> torch.Tensor:
        """The operation on the gated inputs -> (B, d)."""
        raise NotImplementedError


class AddFusion(FusionOp):
    """ADD: ``sum_j g_j x_j``. No parameters."""

    reads = "sum"

    def fuse(self, gated: GatedInputs) -> torch.Tensor:
        return gated.sum()  # (B, d)


class ProdFusion(FusionOp):
    """PROD over the active inputs only: ``prod_j (g_j x_j + (1 - g_j))``. No parameters.

    A gated-off input enters as the neutral element 1, so the result does not depend on which
    inputs are off; the same semantics hold in search and in the derived model.
    """

    reads = "product"

    def fuse(self, gated: GatedInputs) -> torch.Tensor:
        return gated.product()  # (B, d): prod_j (g_j x_j + 1 - g_j)


class ConcatFusion(FusionOp):
    """CONCAT: ``Linear(k*d -> d)`` applied to ``[g_1 x_1, ..., g_k x_k]``."""

    def __init__(self, num_inputs: int, dim: int):
        super().__init__(num_inputs, dim)
        self.linear = nn.Linear(num_inputs * dim, dim)

    def fuse(self, gated: GatedInputs) -> torch.Tensor:
        k, batch, dim = gated.stack().shape
        # (k, B, d) -> (B, k, d) -> (B, k*d); input j occupies columns [j*d, (j+1)*d)
        concat = gated.stack().transpose(0, 1).reshape(batch, k * dim)
        return self.linear(concat)  # (B, d)


class AttentionFusion(FusionOp):
    """ATT: ``sum_j a_j(g_j x_j) * g_j x_j`` with a per-input attention net
    ``a_j = softmax_d(W2_j relu(W1_j x + b1_j))`` (softmax over the d features).

    The k nets are stored stacked, ``w1`` (k, h, d), ``b1`` (k, h), ``w2`` (k, d, h) (input j's
    net is ``w1[j], b1[j], w2[j]``, in ``nn.Linear``'s layout and initialisation), so all inputs
    go through one batched matmul per layer. Parameter cost: ``2 d^2 + d`` per input (W1 with
    bias, W2 without), i.e. about ``2 k d^2`` for the node, which dominates the supernet at large
    d (Criteo: d = 1560 gives ~4.9M per input).
    """

    hidden: int | None = None  # width of the attention nets' hidden layer; None means d

    def __init__(self, num_inputs: int, dim: int):
        super().__init__(num_inputs, dim)
        hidden = dim if self.hidden is None else min(self.hidden, dim)
        self.w1 = nn.Parameter(torch.empty(num_inputs, hidden, dim))  # (k, h, d)
        self.b1 = nn.Parameter(torch.empty(num_inputs, hidden))  # (k, h)
        self.w2 = nn.Parameter(torch.empty(num_inputs, dim, hidden))  # (k, d, h)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation, net by net in input order (the draws that k separate
        ``Linear(d, h)``, ``Linear(h, d, bias=False)`` pairs would make)."""
        bound = 1 / math.sqrt(self.dim)  # nn.Linear's bias bound: 1 / sqrt(fan_in)
        for j in range(self.num_inputs):
            nn.init.kaiming_uniform_(self.w1[j], a=math.sqrt(5))
            nn.init.uniform_(self.b1[j], -bound, bound)
            nn.init.kaiming_uniform_(self.w2[j], a=math.sqrt(5))

    def fuse(self, gated: GatedInputs) -> torch.Tensor:
        z = gated.stack()  # (k, B, d)
        # (k, B, d) @ (k, d, h) + b1 -> (k, B, h), ReLU in place (baddbmm keeps its inputs only)
        hidden = torch.relu_(torch.baddbmm(self.b1.unsqueeze(1), z, self.w1.transpose(1, 2)))
        scores = torch.bmm(hidden, self.w2.transpose(1, 2))  # (k, B, h) @ (k, h, d) -> (k, B, d)
        attention = torch.softmax(scores, dim=-1)  # (k, B, d): a_j, softmax over the d features
        return (attention * z).sum(dim=0)  # (B, d)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        stack_attention_nets(state_dict, prefix)  # files written before the nets were stacked
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def stack_attention_nets(state: dict, prefix: str = "") -> dict:
    """Rewrite, in place, the per-input attention nets of state dicts written before ATT stored
    them stacked (``<op>.attention.<j>.0.weight``, ``.0.bias``, ``.2.weight``) as ``<op>.w1``,
    ``<op>.b1``, ``<op>.w2``; ``prefix`` limits it to one operation's keys. Returns ``state``."""
    layers = {"0.weight": "w1", "0.bias": "b1", "2.weight": "w2"}
    found: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(prefix)]:
        match = re.fullmatch(r"(.*)attention\.(\d+)\.(0\.weight|0\.bias|2\.weight)", key)
        if match:
            head, index, layer = match.groups()
            found.setdefault((head, layers[layer]), {})[int(index)] = state.pop(key)
    for (head, name), nets in found.items():
        state[head + name] = torch.stack([nets[j] for j in range(len(nets))])
    return state


class LowRankAttentionFusion(AttentionFusion):
    """ATT-LITE (not in the paper): ATT whose per-input attention net has a rank-``r``
    bottleneck, ``a_j = softmax_d(W2_j relu(W1_j x + b1_j))`` with W1 (r x d) and W2 (d x r).

    It costs ``2 d r + r`` parameters per input instead of ``2 d^2 + d`` (r = 32: about 50x
    fewer at Criteo's d = 1560), for searches at large d where the reference ATT dominates the
    supernet. Choose it with ``--operations add,prod,concat,att-lite``.
    """

    hidden = 32  # the rank r


OPERATION_CLASSES: dict[str, type[FusionOp]] = {
    "add": AddFusion,
    "prod": ProdFusion,
    "concat": ConcatFusion,
    "att": AttentionFusion,
    "att-lite": LowRankAttentionFusion,
}


def validate_operation(name: str) -> str:
    """Return ``name`` if it is a known operation, else raise a ValueError listing the choices."""
    if name not in OPERATION_CLASSES:
        raise ValueError(
            f"unknown fusion operation {name!r}; valid choices: {', '.join(OPERATION_CLASSES)}"
        )
    return name


def build_operation(name: str, num_inputs: int, dim: int) -> FusionOp:
    """Build the fusion operation called ``name`` for ``num_inputs`` inputs of width ``dim``."""
    return OPERATION_CLASSES[validate_operation(name)](num_inputs, dim)
