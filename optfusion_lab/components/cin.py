"""Compressed Interaction Network (CIN) of xDeepFM.

Layer k maps the previous hidden map ``x`` (B, H, D) and the field embeddings ``x0`` (B, F, D) to
``x_out[b, o, :] = sum_{h, f} W[o, h, f] * (x[b, h, :] * x0[b, f, :]) + bias[o]``: an outer product
over fields, kept separate per embedding coordinate, compressed by a 1x1 convolution. Like
equation (6) of the xDeepFM paper, the layer has no activation.
"""

from collections.abc import Sequence

import torch
from torch import nn


class CINLayer(nn.Module):
    """One CIN layer: (x0 (B, F, D), x (B, H, D)) -> (B, out_size, D)."""

    def __init__(self, num_fields_in: int, num_fields0: int, out_size: int):
        super().__init__()
        self.num_fields_in = num_fields_in
        self.num_fields0 = num_fields0
        self.out_size = out_size
        # a 1x1 convolution over the H*F interaction maps = a Linear applied at every coordinate d
        self.conv = nn.Conv1d(num_fields_in * num_fields0, out_size, kernel_size=1)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        z = torch.einsum("bhd,bfd->bhfd", x, x0)  # (B, H, F, D)
        z = z.reshape(batch, self.num_fields_in * self.num_fields0, dim)  # (B, H*F, D)
        # The 1x1 convolution as one matmul over the H*F maps (same result, faster on CPU).
        weight = self.conv.weight.squeeze(-1)  # (out_size, H*F)
        out = nn.functional.linear(z.transpose(1, 2), weight, self.conv.bias)  # (B, D, out_size)
        return out.transpose(1, 2)  # (B, out_size, D)


class CIN(nn.Module):
    """Stacked CIN layers with sum pooling over the embedding dimension, as in xDeepFM.

    Each layer's output is sum-pooled over D and the pooled vectors are concatenated.
    With ``split_half`` every layer but the last sends half of its maps to the next layer and
    the other half to the output (sizes before the last must then be even).
    Input: (B, F, D). Output: (B, self.output_dim); ``output_dim == sum(layer_sizes)`` without
    ``split_half``.
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int], split_half: bool = False):
        super().__init__()
        if len(layer_sizes) == 0:
            raise ValueError("CIN needs at least one layer size")
        self.split_half = split_half
        self.layers = nn.ModuleList()
        self.output_dim = 0
        num_fields_in = num_fields
        for i, size in enumerate(layer_sizes):
            is_last = i == len(layer_sizes) - 1
            if split_half and not is_last and size % 2 != 0:
                raise ValueError(f"with split_half, CIN sizes before the last must be even: {size}")
            self.layers.append(CINLayer(num_fields_in, num_fields, size))
            if split_half and not is_last:
                num_fields_in = size // 2
                self.output_dim += size // 2
            else:
                num_fields_in = size
                self.output_dim += size

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        pooled = []
        x = x0
        for i, layer in enumerate(self.layers):
            out = layer(x0, x)  # (B, H_k, D)
            if self.split_half and i < len(self.layers) - 1:
                x, direct = out.chunk(2, dim=1)  # (B, H_k/2, D) each
            else:
                x, direct = out, out
            pooled.append(direct.sum(dim=-1))  # (B, H_k or H_k/2)
        return torch.cat(pooled, dim=1)  # (B, output_dim)
