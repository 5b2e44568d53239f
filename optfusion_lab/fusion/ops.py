"""Fusion operations of a node with k candidate inputs (DESIGN.md section 2).

Every operation has the same call: ``op(inputs, gates) -> (B, d)`` where

- ``inputs`` is a tensor (k, B, d) or a list of k tensors (B, d);
- ``gates`` is a tensor (k,) of 0/1 values, possibly straight-through (float, with gradient);
- ``sources_fed`` (optional, the supernet's) is a tensor (k,) of 0/1 constants: an input from a
  source that is not fed counts as inactive.

The gating is defined once, in ``FusionOp.forward``: input j enters as ``g_j * x_j``, the
operation's own formula (``fuse``) is applied to these gated inputs, and a node with no active
input outputs zeros under every operation. Those zeros are a straight-through mask
(:func:`~optfusion_lab.fusion.gates.straight_through_mask`): the gradient still reaches the gates
as if an input were active, so a node whose inputs are all off can switch one back on.
"""

from collections.abc import Sequence

import torch
from torch import nn

from optfusion_lab.fusion.gates import straight_through_mask
from optfusion_lab.names import OPERATIONS  # noqa: F401 (re-exported)

# OPERATIONS: the paper's candidate operations, in the order of beta's columns (the default
# everywhere). The registry below also holds "att-lite", a cheaper ATT a user may choose.


def stack_inputs(inputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A list of k tensors (B, d) or a tensor (k, B, d) -> tensor (k, B, d)."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    return torch.stack(list(inputs))  # (k, B, d)


def gate_inputs(
    inputs: torch.Tensor | Sequence[torch.Tensor],
    gates: torch.Tensor,
    num_inputs: int,
    dim: int,
    sources_fed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and gate the inputs once: (``g_j * x_j`` (k, B, d), gates, any-active flag).

    ``sources_fed`` (k,) 0/1 (optional, a constant): an input whose source is not fed counts as
    inactive, i.e. its gate is 0 in the forward pass. Like the any-active flag (1 if any input is
    active, else 0) it is applied with :func:`straight_through_mask`, so neither ever blocks a
    gradient: the gates and the inputs get theirs as if every source were fed. The returned gates
    are the effective ones (forward ``g_j * fed_j``). A mixed node gates once and shares the
    result among its operations.
    """
    x = stack_inputs(inputs)  # (k, B, d)
    if x.dim() != 3 or x.shape[0] != num_inputs or x.shape[2] != dim:
        raise ValueError(f"expected inputs of shape ({num_inputs}, B, {dim}), got {tuple(x.shape)}")
    if gates.shape != (num_inputs,):
        raise ValueError(f"expected gates of shape ({num_inputs},), got {tuple(gates.shape)}")
    g = gates.to(x.dtype)  # (k,)
    gated = x * g.view(-1, 1, 1)  # (k, B, d): g_j * x_j
    if sources_fed is not None:
        if sources_fed.shape != (num_inputs,):
            raise ValueError(f"expected sources_fed of shape ({num_inputs},), "
                             f"got {tuple(sources_fed.shape)}")
        fed = sources_fed.to(x.dtype)  # (k,)
        gated = straight_through_mask(gated, fed.view(-1, 1, 1))  # (k, B, d)
        g = straight_through_mask(g, fed)  # (k,) effective gates
    any_active = (g.detach() != 0).any().to(x.dtype)
    return gated, g, any_active


class FusionOp(nn.Module):
    """Base class: gate the inputs, apply ``fuse``, output zeros when no gate is active (with a
    straight-through backward, see the module docstring)."""

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
        gated, g, any_active = gate_inputs(inputs, gates, self.num_inputs, self.dim, sources_fed)
        return straight_through_mask(self.fuse(gated, g), any_active)  # (B, d)

    def fuse(self, gated: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The operation on the gated inputs (k, B, d) -> (B, d)."""
        raise NotImplementedError


class AddFusion(FusionOp):
    """ADD: ``sum_j g_j x_j``. No parameters."""

    def fuse(self, gated: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return gated.sum(dim=0)  # (B, d)


class ProdFusion(FusionOp):
    """PROD over the active inputs only: ``prod_j (g_j x_j + (1 - g_j))``. No parameters.

    A gated-off input enters as the neutral element 1, so the result does not depend on which
    inputs are off; the same semantics hold in search and in the derived model.
    """

    def fuse(self, gated: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        factors = gated + (1 - gates).view(-1, 1, 1)  # (k, B, d): g x + (1 - g)
        return factors.prod(dim=0)  # (B, d)


class ConcatFusion(FusionOp):
    """CONCAT: ``Linear(k*d -> d)`` applied to ``[g_1 x_1, ..., g_k x_k]``."""

    def __init__(self, num_inputs: int, dim: int):
        super().__init__(num_inputs, dim)
        self.linear = nn.Linear(num_inputs * dim, dim)

    def fuse(self, gated: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        k, batch, dim = gated.shape
        # (k, B, d) -> (B, k, d) -> (B, k*d); input j occupies columns [j*d, (j+1)*d)
        concat = gated.permute(1, 0, 2).reshape(batch, k * dim)
        return self.linear(concat)  # (B, d)


class AttentionFusion(FusionOp):
    """ATT: ``sum_j a_j(g_j x_j) * g_j x_j`` with a per-input attention net
    ``a_j = softmax_d(W2_j relu(W1_j x + b1_j))`` (softmax over the d features).

    Parameter cost: ``2 d^2 + d`` per input (W1 with bias, W2 without), i.e. about ``2 k d^2``
    for the node, which dominates the supernet at large d (Criteo: d = 1560 gives ~4.9M per input).
    """

    hidden: int | None = None  # width of the attention nets' hidden layer; None means d

    def __init__(self, num_inputs: int, dim: int):
        super().__init__(num_inputs, dim)
        hidden = dim if self.hidden is None else min(self.hidden, dim)
        self.attention = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, dim, bias=False),
                nn.Softmax(dim=-1),
            )
            for _ in range(num_inputs)
        )

    def fuse(self, gated: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(gated[0])  # (B, d)
        for x_j, a_j in zip(gated, self.attention, strict=True):  # loop over the k inputs
            out = out + a_j(x_j) * x_j  # (B, d)
        return out


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
