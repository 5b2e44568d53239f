"""The optimizers: Adam with an embedding group and a network group, and a joint optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

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
) -> torch.optim.Adam:
    """Adam over :func:`param_groups` (coupled L2 via weight_decay, as the reference)."""
    return torch.optim.Adam(param_groups(model, cfg, parameters))


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
