"""A plain multi-layer perceptron."""

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``[Linear -> (BatchNorm) -> ReLU -> (Dropout)] * len(hidden_dims)`` then an optional Linear.

    With ``output_dim`` set, a final ``Linear(hidden_dims[-1], output_dim)`` (no activation) is
    appended, e.g. ``output_dim=1`` for a logit. With no hidden layer and no ``output_dim`` the
    module is the identity. ``self.output_dim`` is the width of what ``forward`` returns.
    Input: (B, input_dim). Output: (B, self.output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.layers = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
