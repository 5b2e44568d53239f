"""The mixed fusion node of the supernet."""

from collections.abc import Sequence

import torch
from torch import nn

from optfusion_lab.fusion.gated import gate_inputs
from optfusion_lab.fusion.gates import straight_through_mix
from optfusion_lab.fusion.ops import OPERATIONS, build_operation


class MixedFusion(nn.Module):
    """Search-mode fusion node: ``sum_o weights[o] * op_o(inputs, gates)``.

    The mixing weights (e.g. ``softmax(beta)``) are an argument of ``forward``, not a parameter,
    so the architecture parameters live with their owner (the supernet); ``sources_fed`` marks
    inputs whose source is dead (see :func:`~optfusion_lab.fusion.gated.gate_inputs`).
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
        # Gate once for all operations (the gated stack, if one needs it, is built once).
        gated = gate_inputs(inputs, gates, self.num_inputs, self.dim, sources_fed,
                            {op.reads for op in self.ops.values()})
        fused = [op.fuse(gated) for op in self.ops.values()]  # (B, d) per operation
        # sum_o w_o fused_o, zeros if no input is active (a straight-through mask)
        return straight_through_mix(fused, weights.to(fused[0].dtype), gated.any_active)
