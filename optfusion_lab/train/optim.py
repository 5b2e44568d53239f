"""The optimizers: Adam with an embedding group and a network group, and a joint optimizer.

Two ways to update the embedding tables (``TrainConfig.embedding_update``):

- ``"dense"`` (the default, the reference's): one ``torch.optim.Adam`` over both groups. The
  tables' gradients are dense ``(num_features, D)`` tensors, and every step reads and writes
  every row's weight and both Adam moments, so a step costs O(vocabulary).
- ``"sparse"``: the tables give sparse gradients (``nn.Embedding(sparse=True)``) and
  :class:`LazyAdam` updates only the rows the batch looked up (the update of
  ``torch.optim.SparseAdam``, a lazy Adam: a row's moments and weight change only at the steps
  whose batch contains it), while ``torch.optim.Adam`` updates the network; a step costs
  O(rows touched). Its L2 is the reference's coupled L2 *restricted to the touched rows* (see
  :func:`touched_row_l2`): coupled L2 cannot reach a row the step does not read, and
  SparseAdam has no weight decay of its own. Rows absent from a batch are left exactly as they
  are (on the dense path, ``--embedding-l2 off`` stops their decay, but Adam's momentum still
  moves the rows of earlier batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from optfusion_lab.components.embedding import set_sparse_gradients
from optfusion_lab.distributed import check_embedding_update

from .config import TrainConfig


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every embedding table of ``model`` (``nn.Embedding`` modules).

    This is ``model.embedding`` plus, for DeepFM and xDeepFM, the first-order term's per-feature
    weight table: it is an embedding of width 1, as sparse as the main table (each row is updated
    only by the batches that contain its feature), so it takes the embedding learning rate and L2.
    The first-order bias is a dense scalar and stays with the network.
    """
    seen: set[int] = set()
    params = []
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
    if not params:
        raise ValueError(f"{type(model).__name__} has no embedding table (nn.Embedding)")
    return params


def param_groups(
    model: nn.Module, cfg: TrainConfig, parameters: Iterable[nn.Parameter] | None = None
) -> list[dict]:
    """Adam groups: 0 = embedding tables (lr_emb, l2_emb), 1 = the rest (lr_nn, l2_nn).

    ``parameters`` restricts the groups to a subset (e.g. a supernet's ``weight_parameters()``);
    by default every parameter of ``model`` that requires a gradient is included, each once.
    """
    candidates = model.parameters() if parameters is None else parameters
    unique = {id(p): p for p in candidates}  # each parameter once, in first-seen order
    wanted = [p for p in unique.values() if p.requires_grad]
    wanted_ids = {id(p) for p in wanted}
    embedding = [p for p in embedding_parameters(model) if id(p) in wanted_ids]
    embedding_ids = {id(p) for p in embedding}
    network = [p for p in wanted if id(p) not in embedding_ids]
    return [
        {"name": "embedding", "params": embedding, "lr": cfg.lr_emb, "weight_decay": cfg.l2_emb},
        {"name": "network", "params": network, "lr": cfg.lr_nn, "weight_decay": cfg.l2_nn},
    ]


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, parameters: Iterable[nn.Parameter] | None = None
) -> Optimizer:
    """The optimizer of :func:`param_groups` for ``cfg.embedding_update``.

    ``"dense"``: Adam over both groups (coupled L2 via weight_decay, as the reference).
    ``"sparse"``: a :class:`JointOptimizer` of :class:`LazyAdam` over the embedding group
    and Adam over the network group (same names, learning rates and L2 coefficients). Either
    way this also sets the model's tables to dense or sparse gradients
    (:func:`~optfusion_lab.components.embedding.set_sparse_gradients`), since the two must
    agree; build the optimizer before wrapping the model in DistributedDataParallel (``fit``
    does). Under torch.distributed the sparse path needs the gloo backend
    (:func:`optfusion_lab.distributed.check_embedding_update`). With ``cfg.compile`` these
    Adams are PyTorch's fused ones (one kernel per tensor instead of a pass per operation; the
    same update up to rounding), since a compiled step is otherwise left with the optimizer's
    passes over every weight.
    """
    groups = param_groups(model, cfg, parameters)
    sparse = cfg.embedding_update == "sparse"
    if sparse:
        check_embedding_update(cfg.embedding_update)
    set_sparse_gradients(model, sparse)
    fused = True if cfg.compile else None
    if not sparse:
        return torch.optim.Adam(groups, fused=fused)
    embedding, network = groups
    return JointOptimizer(LazyAdam([embedding]), torch.optim.Adam([network], fused=fused))


def touched_row_l2(grad: torch.Tensor, weight: torch.Tensor, coefficient: float) -> torch.Tensor:
    """A table's sparse gradient plus coupled L2 on the rows it touches.

    ``grad`` is the sparse ``(num_features, D)`` gradient of a lookup (a row may appear once
    per occurrence); the result is coalesced (one entry per distinct row r) with values
    ``grad_r + coefficient * weight_r``: the gradient of ``loss + coefficient / 2 * sum over
    the distinct rows r of the batch of ||weight_r||^2``. This is the reference's coupled L2
    (Adam adds ``weight_decay * w`` to the gradient of every row) for the rows the step reads;
    rows the batch does not touch get no decay. It is counted once per distinct row, not per
    occurrence, so a frequent feature is not decayed more within one step than a rare one.
    """
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()  # (1, R), (R, D)
    if coefficient:
        values = values + coefficient * weight.detach().index_select(0, indices[0])  # (R, D)
    return torch.sparse_coo_tensor(indices, values, grad.shape, is_coalesced=True,
                                   check_invariants=False)


class LazyAdam(torch.optim.Optimizer):
    """Row-wise lazy Adam for tables with sparse gradients, with coupled L2 on the touched rows.

    ``LazyAdam([{"params": [table.weight], "lr": 1e-3, "weight_decay": 3e-6}])``

    The arithmetic and the state of ``torch.optim.SparseAdam`` (per table ``step``, ``exp_avg``,
    ``exp_avg_sq``; the bias correction uses the table's step count), plus a ``weight_decay`` per
    group applied by :func:`touched_row_l2`. For the R distinct rows of the step (``g`` their
    gradient, L2 included; ``m``, ``v`` their moments)::

        m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g^2
        w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

    and no other row is read or written. It gathers the touched rows of each moment once
    (``index_select``), updates them, and writes them back (``index_copy_``, and ``index_add_``
    into the weight): five passes over the R rows, where SparseAdam's two ``sparse_mask`` and
    three additions of a sparse tensor to a dense one take twice the time on a 10M-row table
    (``benchmarks/README.md``).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):  # fmt: skip
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:  # the L2 must be added to the gradients the closure makes
            raise ValueError("LazyAdam.step takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(
                        "embedding_update='sparse' needs sparse embedding gradients: build the "
                        "optimizer with make_optimizer (it sets the tables' sparse flag), or "
                        "call set_sparse_gradients(model, True) before the first step"
                    )
                grad = touched_row_l2(p.grad, p, group["weight_decay"])
                rows, g = grad.indices()[0], grad.values()  # (R,), (R, D)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p,
                                                           memory_format=torch.preserve_format)
                state["step"] += 1
                if rows.numel() == 0:
                    continue
                t = state["step"]
                m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)  # (R, D)
                v = state["exp_avg_sq"].index_select(0, rows)  # (R, D)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)
        return None


class JointOptimizer:
    """Several optimizers stepped on one backward pass.

    The one-shot search is single-level and joint: every training batch gives one loss and one
    backward pass, then both the weight optimizer and the architecture optimizer step.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, state in zip(self.optimizers, states, strict=True):
            o.load_state_dict(state)


Optimizer = torch.optim.Optimizer | JointOptimizer


def learning_rates(optimizer: Optimizer) -> dict[str, float]:
    """``{group name: learning rate}`` (groups need a ``name``)."""
    return {g["name"]: g["lr"] for g in optimizer.param_groups}
