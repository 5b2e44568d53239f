"""Cross networks: DCN (v1) and DCN-V2 layers on flat inputs of width d.

Every cross layer takes ``forward(x0, x)``: ``x0`` is the raw flat embedding (B, d) and ``x`` the
layer's input (B, d), which is ``x0`` for the first layer of a chain.
"""

import torch
from torch import nn


class CrossLayerV1(nn.Module):
    """DCN v1 layer: ``x_out = x0 * (x . w) + b + x`` (the scalar ``x . w`` scales ``x0``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Linear(dim, 1, bias=False)
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x_dot_w = self.w(x)  # (B, 1)
        return x0 * x_dot_w + self.b + x  # (B, d)


class CrossNetV1(nn.Module):
    """``num_layers`` DCN v1 layers chained from ``x0``. Input and output: (B, d)."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(CrossLayerV1(dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class CrossLayerV2(nn.Module):
    """DCN-V2 layer: ``x_out = x0 * (W x + b) + x``.

    With ``low_rank = r`` the matrix is factorised as ``W = U V^T`` (U, V of shape (d, r)), which
    costs ``2 d r`` instead of ``d^2`` weights: ``self.linear`` is then ``x -> V^T x -> U (.) + b``.
    """

    def __init__(self, dim: int, low_rank: int | None = None):
        super().__init__()
        if low_rank is None:
            self.linear = nn.Linear(dim, dim)  # W x + b
        else:
            if low_rank <= 0:
                raise ValueError(f"low_rank must be a positive int or None, got {low_rank}")
            self.linear = nn.Sequential(
                nn.Linear(dim, low_rank, bias=False),  # V^T x, weight = V^T (r, d)
                nn.Linear(low_rank, dim),  # U (V^T x) + b, weight = U (d, r)
            )

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        wx_plus_b = self.linear(x)  # (B, d)
        return x0 * wx_plus_b + x  # (B, d)


class CrossNetV2(nn.Module):
    """``num_layers`` DCN-V2 layers chained from ``x0``. Input and output: (B, d)."""

    def __init__(self, dim: int, num_layers: int, low_rank: int | None = None):
        super().__init__()
        self.layers = nn.ModuleList(CrossLayerV2(dim, low_rank) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
