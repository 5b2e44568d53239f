"""Pairwise field interactions: the FM second-order term and inner products."""

import torch
from torch import nn


class FMInteraction(nn.Module):
    """FM second-order term ``sum_{i<j} <v_i, v_j> = 0.5 * sum_k((sum_f v)^2 - sum_f v^2)``.

    Input: field embeddings (B, F, D). Output: (B, 1).
    """

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        square_of_sum = v.sum(dim=1) ** 2  # (B, D)
        sum_of_square = (v**2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)  # (B, 1)


class InnerProduct(nn.Module):
    """All pairwise inner products ``<v_i, v_j>`` for i < j, in row-major order of (i, j).

    Input: (B, F, D). Output: (B, F*(F-1)/2). ``forward`` computes the Gram matrix ``V V^T``
    with one batched matmul and gathers its upper triangle through an index buffer built once
    from ``num_fields``: no loop over fields, and no (B, P, D) intermediate.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = num_fields
        pairs = torch.triu_indices(num_fields, num_fields, offset=1)  # (2, P)
        # position of (i, j) in the flattened (F, F) Gram matrix
        self.register_buffer("pair_index", pairs[0] * num_fields + pairs[1], persistent=False)

    @property
    def output_dim(self) -> int:
        return self.num_fields * (self.num_fields - 1) // 2

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(v, v.transpose(1, 2))  # (B, F, F): <v_i, v_j>
        return gram.flatten(start_dim=1)[:, self.pair_index]  # (B, F*F) -> (B, P)
