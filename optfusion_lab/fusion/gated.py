"""The gated inputs of a fusion node, without materialising a gated copy of them.

A fusion node with k inputs ``x_j`` (B, d) and edge gates ``g_j`` (0/1, straight-through)
applies its operations to the gated inputs ``g_j x_j``. Stacking the inputs into a (k, B, d)
tensor and multiplying it by the gates costs two (k, B, d) copies per node before any operation
runs; the functions here compute each operation's use of the gated inputs directly:

- :class:`GatedSum`: ``sum_j c_j x_j`` (ADD), accumulated into one (B, d) tensor;
- :class:`GatedProduct`: ``prod_j (c_j x_j + 1 - c_j)`` (PROD over the active inputs), and
  :class:`GatedSumProduct`, both in one pass (a node mixing ADD and PROD);
- :class:`GatedStack`: the (k, B, d) tensor of ``c_j x_j`` (ATT's input for its batched
  matmuls, and CONCAT's as a (B, k*d) view: its memory is laid out (B, k, d)), built once per
  node and shared by both.

``c_j = g_j * fed_j`` are the forward coefficients (``fed_j``: the input's source is fed, see
:func:`gate_inputs`), constants for autograd. The backward pass is
exactly that of the plain formulas with the straight-through masks of
:mod:`~optfusion_lab.fusion.gates`: with ``G_j`` the gradient that reaches ``g_j x_j``,
``d x_j = g_j G_j`` (``g_j``, not ``c_j``: the source mask is straight-through) and
``d g_j = <x_j, G_j>`` (minus ``sum G_j`` for PROD, whose neutral element ``1 - g_j`` depends on
the gate too). A gated-off input therefore still gets its gate's gradient, which is why the
inputs themselves, not gated copies, are what these functions save for the backward pass.

:class:`GatedInputs` holds a node's inputs, gates and masks and hands these to the operations
(:func:`gate_inputs` checks and builds it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from optfusion_lab.fusion.gates import flat_dot as _dot
from optfusion_lab.fusion.gates import straight_through_mask


class GatedSum(torch.autograd.Function):
    """``sum_j c_j x_j`` (B, d); backward ``d x_j = g_j G``, ``d g_j = <x_j, G>``."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, coeffs: torch.Tensor, *inputs: torch.Tensor):
        ctx.num_inputs = len(inputs)
        ctx.save_for_backward(gates, *inputs)
        return _gated_sum(inputs, coeffs, _flags(coeffs))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _sum_product_backward(ctx, grad, None)


def _flags(coeffs: torch.Tensor) -> list[bool] | None:
    """Which inputs are active, where every coefficient is exactly 0 or 1 and reading them is
    free (a CPU tensor, outside torch.compile); None otherwise. With the flags, an inactive
    input is skipped instead of multiplied by 0, and an active one is its own PROD factor:
    the same values without a (B, d) product and copy per input."""
    if coeffs.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    values = coeffs.tolist()
    return [v == 1.0 for v in values] if all(v in (0.0, 1.0) for v in values) else None


def _gated_sum(inputs: Sequence[torch.Tensor], coeffs: torch.Tensor,
               active: list[bool] | None) -> torch.Tensor:
    """``sum_j c_j x_j`` (B, d), a new tensor."""
    if active is None:
        total = inputs[0] * coeffs[0]
        for c, x in zip(coeffs.unbind()[1:], inputs[1:], strict=True):
            total.addcmul_(x, c)  # total += c_j x_j
        return total
    on = [x for x, a in zip(inputs, active, strict=True) if a]
    if not on:
        return torch.zeros_like(inputs[0])
    total = on[0].clone() if len(on) == 1 else torch.add(on[0], on[1])
    for x in on[2:]:
        total.add_(x)
    return total


def _factors(inputs: Sequence[torch.Tensor], coeffs: torch.Tensor,
             active: list[bool] | None) -> list[torch.Tensor | None]:
    """PROD's factor of every input, ``c x + (1 - c)``: x if active, the neutral 1 if not.
    With the flags of :func:`_flags` an active input is its own factor and None stands for 1."""
    if active is None:
        return [torch.addcmul(1 - c, x, c) for c, x in zip(coeffs.unbind(), inputs, strict=True)]
    return [x if a else None for x, a in zip(inputs, active, strict=True)]


def _product(factors: list[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """The product of the factors (None: 1), a new tensor shaped like ``like``."""
    present = [f for f in factors if f is not None]
    if not present:
        return torch.ones_like(like)
    if len(present) == 1:
        return present[0].clone()
    out = present[0] * present[1]  # (B, d)
    for factor in present[2:]:
        out.mul_(factor)
    return out


def _sum_product_backward(ctx, grad_sum, grad_product):
    """Gradients of ``(sum_j c_j x_j, prod_j f_j)`` given the upstream gradient of either or
    both: for input j, ``G_j = grad_sum + P_j`` with ``P_j = grad_product * prod_{i != j} f_i``
    (exclusive products from a suffix and a prefix pass: exact where inputs are zero, as ReLU
    outputs often are), ``d x_j = g_j G_j`` and ``d g_j = <x_j, G_j> - sum P_j``."""
    gates, *saved = ctx.saved_tensors
    k = ctx.num_inputs
    inputs, factors = saved[:k], saved[k:]
    needs_gates, needs_inputs = ctx.needs_input_grad[0], ctx.needs_input_grad[2:]
    suffix = [grad_product] * k  # suffix[j] = grad_product * prod_{i > j} f_i
    if grad_product is not None:
        for j in range(k - 1, 0, -1):  # a factor None is 1: the suffix is the next one's
            suffix[j - 1] = suffix[j] if factors[j] is None else suffix[j] * factors[j]
    grad_gates, grad_inputs = [], []
    ones = _flags(gates)  # which gates are 1, where all are 0 or 1 (see _flags)
    prefix, prefix_mine = None, False  # prefix = prod_{i < j} f_i (None: 1)
    for j, (g, x) in enumerate(zip(gates.unbind(), inputs, strict=True)):
        total, own, dot_offset = grad_sum, False, None
        if grad_product is not None:
            partial = suffix[j]  # (B, d): P_j once multiplied by the prefix
            # a tensor of ours that no other input reads (or was given): free to change in place
            mine = partial is not grad_product and all(
                suffix[i] is not partial for i in (j - 1, j + 1) if 0 <= i < k)
            out = {"out": partial} if mine else {}
            if prefix is None:  # a prefix of 1 (j = 0, or inactive inputs): P_j is the suffix
                if needs_gates:
                    dot_offset = partial.sum()
                total, own = partial, mine
                if grad_sum is not None:
                    total, own = torch.add(partial, grad_sum, **out), True
            else:
                if needs_gates:
                    dot_offset = _dot(partial, prefix)  # sum P_j
                if grad_sum is None:
                    total = torch.mul(partial, prefix, **out)  # P_j
                else:
                    total = torch.addcmul(grad_sum, partial, prefix, **out)  # grad_sum + P_j
                own = True
            if j < k - 1 and factors[j] is not None:
                if prefix is None:
                    prefix = factors[j]  # saved for the backward pass: never changed in place
                elif prefix_mine:
                    prefix.mul_(factors[j])
                else:
                    prefix, prefix_mine = prefix * factors[j], True
        if needs_gates:
            dot = _dot(x, total)
            grad_gates.append(dot if dot_offset is None else dot - dot_offset)
        if not needs_inputs[j] or (ones is not None and not ones[j]):
            grad_inputs.append(None)  # (a gate of 0: a gradient of 0)
        elif ones is not None:  # a gate of 1: the gradient is total, if no other input has it
            given = any(total is t for t in grad_inputs)  # autograd may add to it in place
            grad_inputs.append(total if own or not given else total.clone())
        else:
            grad_inputs.append(total.mul_(g) if own else total * g)
    return (torch.stack(grad_gates) if needs_gates else None), None, *grad_inputs


class GatedProduct(torch.autograd.Function):
    """``prod_j f_j`` with ``f_j = c_j x_j + 1 - c_j`` (B, d): the product of the active inputs.

    Backward: with ``P_j = G * prod_{i != j} f_i``, ``d x_j = g_j P_j`` and
    ``d g_j = <x_j - 1, P_j>`` (the neutral element ``1 - g_j`` depends on the gate too).
    """

    @staticmethod
    def forward(ctx, gates: torch.Tensor, coeffs: torch.Tensor, *inputs: torch.Tensor):
        factors = _factors(inputs, coeffs, _flags(coeffs))
        ctx.num_inputs = len(inputs)
        ctx.save_for_backward(gates, *inputs, *factors)
        return _product(factors, inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _sum_product_backward(ctx, None, grad)


class GatedSumProduct(torch.autograd.Function):
    """``(sum_j c_j x_j, prod_j f_j)`` in one pass over the inputs, for a node that mixes ADD and
    PROD: one gradient per input for both (see :func:`_sum_product_backward`)."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, coeffs: torch.Tensor, *inputs: torch.Tensor):
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None
        active = _flags(coeffs)
        factors = _factors(inputs, coeffs, active)
        ctx.num_inputs = len(inputs)
        ctx.save_for_backward(gates, *inputs, *factors)
        return _gated_sum(inputs, coeffs, active), _product(factors, inputs[0])

    @staticmethod
    def backward(ctx, grad_sum: torch.Tensor | None, grad_product: torch.Tensor | None):
        return _sum_product_backward(ctx, grad_sum, grad_product)


class GatedStack(torch.autograd.Function):
    """The (k, B, d) tensor of ``c_j x_j``; backward ``d x_j = g_j G[j]``,
    ``d g_j = <x_j, G[j]>``.

    Its memory is laid out (B, k, d), so that CONCAT's (B, k*d) matrix is a view of it, not a
    copy; the batched matmuls of ATT read the (k, B, d) view as it is (row stride k*d)."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, coeffs: torch.Tensor, *inputs: torch.Tensor):
        ctx.save_for_backward(gates, *inputs)
        if torch.compiler.is_compiling():  # (no strided out= there; the compiler fuses it)
            return torch.stack([x * c for c, x in zip(coeffs.unbind(), inputs, strict=True)],
                               dim=1).transpose(0, 1)
        batch, dim = inputs[0].shape
        out = inputs[0].new_empty(batch, len(inputs), dim).transpose(0, 1)  # (k, B, d) view
        active = _flags(coeffs)
        for j, (c, x) in enumerate(zip(coeffs.unbind(), inputs, strict=True)):
            if active is None:
                torch.mul(x, c, out=out[j])
            elif active[j]:
                out[j].copy_(x)
            else:
                out[j].zero_()
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gates, *inputs = ctx.saved_tensors
        grad_gates = None
        if ctx.needs_input_grad[0]:
            grad_gates = torch.stack([_dot(x, grad[j]) for j, x in enumerate(inputs)])
        ones = _flags(gates)  # which gates are 1, where all are 0 or 1 (see _flags)
        grad_inputs = []
        for j, (g, needs) in enumerate(zip(gates.unbind(), ctx.needs_input_grad[2:],
                                           strict=True)):
            if not needs or (ones is not None and not ones[j]):
                grad_inputs.append(None)  # (a gate of 0: a gradient of 0)
            else:  # a gate of 1: the slice itself (a view: autograd never adds to it in place)
                grad_inputs.append(grad[j] if ones is not None else grad[j] * g)
        return grad_gates, None, *grad_inputs


class GatedInputs:
    """The k inputs (B, d) of a fusion node with their gates, gated on demand.

    ``gates`` (k,) are the straight-through gates (with their gradient), ``coeffs`` (k,) the
    forward coefficients ``g_j * fed_j`` (constants), ``effective`` (k,) the effective gates
    (forward ``g_j * fed_j``, backward identity to ``g_j``) and ``any_active`` the 0/1 flag "some
    input is active". :meth:`sum`, :meth:`product` and :meth:`stack` apply the functions above;
    each is computed once and shared by the operations that read it (the stack by CONCAT and
    ATT); ``reads`` names those the node's operations will ask for, so that a node reading both
    the sum and the product gets them from one :class:`GatedSumProduct`.
    """

    def __init__(self, inputs: Sequence[torch.Tensor], gates: torch.Tensor,
                 sources_fed: torch.Tensor | None = None, reads: Collection[str] = ()):
        self.inputs = tuple(inputs)
        self.reads = frozenset(reads)
        self.gates = gates
        coeffs = gates.detach()
        self.effective = gates
        if sources_fed is not None:
            coeffs = coeffs * sources_fed
            self.effective = straight_through_mask(gates, sources_fed)
        self.coeffs = coeffs
        self.any_active = (coeffs != 0).any().to(gates.dtype)
        self._computed: dict[str, torch.Tensor] = {}

    def _apply(self, function: type[torch.autograd.Function]):
        return function.apply(self.gates, self.coeffs, *self.inputs)

    def sum(self) -> torch.Tensor:
        """``sum_j g_j x_j`` (B, d)."""
        if "sum" not in self._computed:
            if "product" in self.reads:
                self._computed["sum"], self._computed["product"] = self._apply(GatedSumProduct)
            else:
                self._computed["sum"] = self._apply(GatedSum)
        return self._computed["sum"]

    def product(self) -> torch.Tensor:
        """``prod_j (g_j x_j + 1 - g_j)`` (B, d) over the effective gates."""
        if "product" not in self._computed:
            if "sum" in self.reads:
                self.sum()
            else:
                self._computed["product"] = self._apply(GatedProduct)
        return self._computed["product"]

    def stack(self) -> torch.Tensor:
        """The gated inputs as one (k, B, d) tensor."""
        if "stack" not in self._computed:
            self._computed["stack"] = self._apply(GatedStack)
        return self._computed["stack"]


def gate_inputs(
    inputs: torch.Tensor | Sequence[torch.Tensor],
    gates: torch.Tensor,
    num_inputs: int,
    dim: int,
    sources_fed: torch.Tensor | None = None,
    reads: Collection[str] = (),
) -> GatedInputs:
    """Check shapes and wrap a node's inputs (a tensor (k, B, d) or k tensors (B, d)) with their
    gates (k,) as :class:`GatedInputs`.

    ``sources_fed`` (k,) 0/1 (optional, a constant): an input whose source is not fed counts as
    inactive, i.e. its gate is 0 in the forward pass. Like the any-active flag it is
    straight-through (:func:`~optfusion_lab.fusion.gates.straight_through_mask`), so neither ever
    blocks a gradient: the gates and the inputs get theirs as if every source were fed. A mixed
    node gates once and shares the result among its operations (``reads``: what they read, see
    :class:`GatedInputs`).
    """
    xs = list(inputs.unbind(0)) if isinstance(inputs, torch.Tensor) else list(inputs)
    if len(xs) != num_inputs or any(x.dim() != 2 or x.shape[1] != dim for x in xs) or any(
        x.shape != xs[0].shape for x in xs
    ):
        shapes = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else [
            tuple(x.shape) for x in xs]
        raise ValueError(f"expected {num_inputs} inputs of shape (B, {dim}), got {shapes}")
    if gates.shape != (num_inputs,):
        raise ValueError(f"expected gates of shape ({num_inputs},), got {tuple(gates.shape)}")
    dtype = xs[0].dtype
    if sources_fed is not None:
        if sources_fed.shape != (num_inputs,):
            raise ValueError(f"expected sources_fed of shape ({num_inputs},), "
                             f"got {tuple(sources_fed.shape)}")
        sources_fed = sources_fed.to(dtype)
    return GatedInputs(xs, gates.to(dtype), sources_fed, reads)
