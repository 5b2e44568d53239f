"""What an OptFusion search costs, next to training one DCN: one place to measure it.

The course (notebook ``07_search_cost``), ``benchmarks/bench_search.py`` and paper-scale runs
measure through these functions:

- :func:`step_seconds`: wall seconds of one training step (forward, backward, optimizer step)
  in steady state, after warm-up steps. For a search supernet the step is the one-shot search's
  joint step (weight optimizer and architecture optimizer on one backward pass).
- :func:`supernet_parameters`: the supernet's parameters by part (embedding, blocks, each
  operation, output, architecture), countable on the ``meta`` device without allocating.
- :func:`search_cost`: the supernet's step time and parameters against a DCN's at the same
  embedding width, and their ratio: the price of one search epoch in DCN epochs.

Timings on a shared CPU are noisy: compare figures from one call (or one process) only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .data.dataset import PreparedData
from .data.loader import BatchLoader
from .models import ModelConfig, build_model
from .models.supernet import FusionNetwork, SupernetConfig
from .train import JointOptimizer, TrainConfig, keep_freed_memory, make_optimizer, resolve_device


def reference_dcn_config(num_fields: int, embed_dim: int) -> ModelConfig:
    """The DCN of the reference presets at embedding width D: three CrossNet-v1 layers beside an
    MLP of three layers of width d = F * D."""
    d = num_fields * embed_dim
    return ModelConfig(embed_dim=embed_dim, mlp_dims=(d, d, d), cross_layers=3)


def training_step_optimizer(model: nn.Module, cfg: TrainConfig, arch_lr: float = 0.1):
    """The optimizer of one training step: Adam (two groups) for a model; for a search
    supernet, that plus Adam over alpha and beta, stepped together (the one-shot search)."""
    if isinstance(model, FusionNetwork) and model.arch_parameters():
        arch = torch.optim.Adam([{"name": "architecture", "params": model.arch_parameters(),
                                  "lr": arch_lr}])
        return JointOptimizer(make_optimizer(model, cfg, model.weight_parameters()), arch)
    return make_optimizer(model, cfg)


def step_seconds(
    model: nn.Module,
    data: PreparedData,
    *,
    batch_size: int = 4096,
    warmup: int = 2,
    steps: int = 10,
    device: str = "cpu",
    arch_lr: float = 0.1,
    seed: int = 0,
) -> float:
    """Mean wall seconds of one training step of ``model`` on ``data``'s training split, over
    ``steps`` steps after ``warmup`` unmeasured ones (batches cycle through the split)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps}, {warmup}")
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()
    cfg = TrainConfig(batch_size=batch_size, device=device, progress=False)
    model.to(dev).train()
    optimizer = training_step_optimizer(model, cfg, arch_lr)
    x, y = data.arrays("train")
    loader = BatchLoader(x, y, batch_size, seed=seed, device=dev, drop_last=len(y) >= batch_size)
    batches = iter(loader)
    started = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            started = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        xb, yb = batch
        loss = nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - started) / steps


def supernet_parameters(num_features: int, num_fields: int, cfg: SupernetConfig) -> dict[str, int]:
    """Parameters of the search supernet by part: ``embedding``, ``blocks``, one entry per
    operation (``add``, ``prod``, ``concat``, ``att``...: their weights in every fusion node),
    ``output`` and ``architecture`` (alpha and beta). Built on the meta device: no memory is
    allocated, so reference sizes (millions of features, d = 1560) are cheap to count."""
    with torch.device("meta"):
        net = FusionNetwork(num_features, num_fields, cfg)
    parts = {"embedding": 0, "blocks": 0, **{op: 0 for op in cfg.operations}, "output": 0,
             "architecture": sum(p.numel() for p in net.arch_parameters())}
    for node in net.fusions.values():
        for op, op_module in node.ops.items():
            parts[op] += sum(p.numel() for p in op_module.parameters())
    parts["embedding"] = sum(p.numel() for p in net.embedding.parameters())
    parts["blocks"] = sum(p.numel() for p in net.blocks.parameters())
    parts["output"] = sum(p.numel() for p in net.output.parameters())
    return parts


@dataclass
class SearchCost:
    """A supernet's training step against a DCN's, at the same embedding width."""

    supernet_step_seconds: float
    dcn_step_seconds: float
    supernet_parameters: int
    dcn_parameters: int
    parts: dict[str, int] = field(default_factory=dict)  # supernet_parameters()

    @property
    def step_ratio(self) -> float:
        """Seconds of one search step / seconds of one DCN step (same batch)."""
        return self.supernet_step_seconds / self.dcn_step_seconds

    @property
    def parameter_ratio(self) -> float:
        return self.supernet_parameters / self.dcn_parameters

    def to_dict(self) -> dict:
        return {"supernet_step_seconds": self.supernet_step_seconds,
                "dcn_step_seconds": self.dcn_step_seconds, "step_ratio": self.step_ratio,
                "supernet_parameters": self.supernet_parameters,
                "dcn_parameters": self.dcn_parameters, "parameter_ratio": self.parameter_ratio,
                **{f"parameters_{k}": v for k, v in self.parts.items()}}


def search_cost(
    data: PreparedData,
    supernet_cfg: SupernetConfig,
    *,
    dcn_cfg: ModelConfig | None = None,
    batch_size: int = 4096,
    warmup: int = 2,
    steps: int = 10,
    device: str = "cpu",
    arch_lr: float = 0.1,
    seed: int = 0,
) -> SearchCost:
    """Time one one-shot search step of the supernet of ``supernet_cfg`` and one training step
    of a DCN (default: :func:`reference_dcn_config` at the supernet's embedding width) on the
    same batches; count both models' parameters."""
    dcn_cfg = dcn_cfg or reference_dcn_config(data.num_fields, supernet_cfg.embed_dim)
    torch.manual_seed(seed)
    dcn = build_model("dcn", data.num_features, data.num_fields, dcn_cfg)
    dcn_seconds = step_seconds(dcn, data, batch_size=batch_size, warmup=warmup, steps=steps,
                               device=device, seed=seed)
    torch.manual_seed(seed)
    net = FusionNetwork(data.num_features, data.num_fields, supernet_cfg)
    net_seconds = step_seconds(net, data, batch_size=batch_size, warmup=warmup, steps=steps,
                               device=device, arch_lr=arch_lr, seed=seed)
    return SearchCost(
        supernet_step_seconds=net_seconds,
        dcn_step_seconds=dcn_seconds,
        supernet_parameters=sum(p.numel() for p in net.parameters()),
        dcn_parameters=sum(p.numel() for p in dcn.parameters()),
        parts=supernet_parameters(data.num_features, data.num_fields, supernet_cfg),
    )
