"""Straight-through estimators of the supernet: the edge gate and the dead-node mask.

Both are exact in the forward pass and the identity in the backward pass:

- :func:`straight_through_gate`: the gate of an edge, forward ``1[alpha > 0]`` (0.0 or 1.0),
  backward identity, so alpha learns from the loss although the gate is a step function.
- :func:`straight_through_mask`: ``x * mask`` for a 0/1 mask computed from the gates (a node is
  fed, a fusion has an active input), backward identity for ``x``. A node with no active input
  outputs zeros, but the gradient reaches its block, its fusion and the gates of its inputs as if
  it were fed; a switched-off edge can therefore switch back on. Where the mask is 1 this is the
  plain product, gradient included.
- :func:`straight_through_mix`: ``mask * sum_o w_o y_o`` (a mixed node's output, zeros if it
  has no active input), backward as if the mask were 1, in one pass and without the unmasked
  mixture as a temporary: the mixed node's ``straight_through_mask(sum_o w_o y_o, mask)``.
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


def flat_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum(a * b)`` over every element: a flat dot without an (a * b) temporary where both
    are contiguous; else (a strided slice, e.g. of a (B, k, d) gradient) the product and its
    sum, one temporary, cheaper than the copies that flattening strided rows would make."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return torch.mul(a, b).sum()


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


class StraightThroughMix(torch.autograd.Function):
    """Forward ``mask * sum_o w_o y_o`` (mask: a 0-d 0/1 constant), backward as if the mask were
    1: ``d y_o = w_o G``, ``d w_o = <y_o, G>``."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, weights: torch.Tensor, *outputs: torch.Tensor):
        ctx.save_for_backward(weights, *outputs)
        scaled = (weights * mask).unbind()  # (ops,) masked mixing weights
        out = outputs[0] * scaled[0]
        for w, y in zip(scaled[1:], outputs[1:], strict=True):
            out.addcmul_(y, w)  # out += mask * w_o * y_o
        return out

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        weights, *outputs = ctx.saved_tensors
        grad_weights = None
        if ctx.needs_input_grad[1]:
            grad_weights = torch.stack([flat_dot(y, grad_output) for y in outputs])  # (ops,)
        grad_outputs = [grad_output * w if needs else None
                        for w, needs in zip(weights.unbind(), ctx.needs_input_grad[2:],
                                            strict=True)]
        return None, grad_weights, *grad_outputs


def straight_through_mix(outputs, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * sum_o weights[o] * outputs[o]`` forward; backward as if ``mask`` were 1 (see the
    module docstring). ``outputs``: tensors of one shape, ``weights`` (ops,), ``mask`` 0-d."""
    if weights.shape != (len(outputs),):
        raise ValueError(f"expected {len(outputs)} weights, got shape {tuple(weights.shape)}")
    return StraightThroughMix.apply(mask, weights, *outputs)
