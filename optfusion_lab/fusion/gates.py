"""Straight-through estimators of the supernet: the edge gate and the dead-node mask.

Both are exact in the forward pass and the identity in the backward pass:

- :func:`straight_through_gate`: the gate of an edge, forward ``1[alpha > 0]`` (0.0 or 1.0),
  backward identity, so alpha learns from the loss although the gate is a step function.
- :func:`straight_through_mask`: ``x * mask`` for a 0/1 mask computed from the gates (a node is
  fed, a fusion has an active input), backward identity for ``x``. A node with no active input
  outputs zeros, but the gradient reaches its block, its fusion and the gates of its inputs as if
  it were fed; a switched-off edge can therefore switch back on. Where the mask is 1 this is the
  plain product, gradient included.
"""

import torch


class StraightThroughGate(torch.autograd.Function):
    """Edge gate: forward ``1[alpha > 0]`` (exactly 0.0 or 1.0), backward identity."""

    @staticmethod
    def forward(ctx, alpha: torch.Tensor) -> torch.Tensor:
        return (alpha > 0).to(alpha.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


def straight_through_gate(alpha: torch.Tensor) -> torch.Tensor:
    """``StraightThroughGate.apply(alpha)``: hard 0/1 gates whose gradient reaches ``alpha``."""
    return StraightThroughGate.apply(alpha)


class StraightThroughMask(torch.autograd.Function):
    """Forward ``x * mask`` (mask: 0/1, broadcast to ``x``'s shape), backward identity for ``x``.

    The mask is a constant (it is computed from detached gates) and gets no gradient.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * mask

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


def straight_through_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x * mask`` forward; the gradient reaches ``x`` unmasked (see the module docstring)."""
    if torch.broadcast_shapes(x.shape, mask.shape) != x.shape:
        raise ValueError(f"a mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"{tuple(x.shape)}")
    return StraightThroughMask.apply(x, mask)
