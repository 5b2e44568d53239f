"""The mixed fusion node of the supernet."""

from collections.abc import Sequence

import torch
from torch import nn

from optfusion_lab.fusion.gates import straight_through_mask
from optfusion_lab.fusion.ops import OPERATIONS, build_operation, gate_inputs


class MixedFusion(nn.Module):
    """Search-mode fusion node: ``sum_o weights[o] * op_o(inputs, gates)``.

    The mixing weights (e.g. ``softmax(beta)``) are an argument of ``forward``, not a parameter,
    so the architecture parameters live with their owner (the supernet); ``sources_fed`` marks
    inputs whose source is dead (see :func:`~optfusion_lab.fusion.ops.gate_inputs`).
    ``weights[o]`` belongs to ``operations[o]``. Every operation is evaluated, even one with
    weight 0 (checking a weight's value would force a device sync); a derived model builds only
    the operations it keeps.
    """

    def __init__(self, num_inputs: int, dim: int, operations: Sequence[str] = OPERATIONS):
        super().__init__()
        if len(operations) == 0:
            raise ValueError("MixedFusion needs at least one operation")
        if len(set(operations)) != len(operations):
            raise ValueError(f"duplicate operations: {tuple(operations)}")
        self.operations = tuple(operations)
        self.num_inputs, self.dim = num_inputs, dim
        self.ops = nn.ModuleDict(
            {name: build_operation(name, num_inputs, dim) for name in operations}
        )

    def forward(
        self,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        gates: torch.Tensor,
        weights: torch.Tensor,
        sources_fed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if weights.shape != (len(self.operations),):
            raise ValueError(
                f"expected weights of shape ({len(self.operations)},), got {tuple(weights.shape)}"
            )
        # Gate once for all operations: (k, B, d) inputs times their 0/1 gates.
        gated, g, any_active = gate_inputs(inputs, gates, self.num_inputs, self.dim, sources_fed)
        out = 0
        for w, op in zip(weights, self.ops.values(), strict=True):
            out = out + w * op.fuse(gated, g)  # (B, d)
        return straight_through_mask(out, any_active)  # zeros if no input is active
