"""Seeds, RNG states and checkpoints: what a resumed run needs to continue bit for bit (CPU).

A checkpoint is a plain dict of tensors and Python values, written atomically, that
``torch.load(weights_only=True)`` reads (no code can run). It holds the loop state (epochs done,
steps, history rows, best epoch and its weights), the model, the optimizer, the callbacks that
define ``state_dict``, the RNG states and a *fingerprint* (the data and options the run depends
on), which a resume must match.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optfusion_lab.io import write_atomic

from .run_config import fingerprint_differences, fingerprints_match

CHECKPOINT_FORMAT = "optfusion-checkpoint"


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeding the legacy global RNG is the point here)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG's state (torch, CUDA, numpy's legacy global, python's) as tensors and lists."""
    kind, keys, *rest = np.random.get_state()  # noqa: NPY002 (the RNG seed_everything seeds)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _cpu(state: Mapping[str, torch.Tensor] | None) -> dict | None:
    return {k: v.detach().cpu() for k, v in state.items()} if state is not None else None


def save_checkpoint(
    path: Path, model: nn.Module, optimizer, loop, callbacks: Sequence, fingerprint: Mapping
) -> None:
    """Write the loop state (a dataclass with a ``best_state``) atomically; under
    torch.distributed only rank 0 writes."""
    loop_values = dataclasses.asdict(dataclasses.replace(loop, best_state=None))
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "fingerprint": dict(fingerprint),
        "loop": {**loop_values, "best_state": _cpu(loop.best_state)},
        "model": _cpu(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
        "rng": rng_state(),
    }
    write_atomic(path, lambda p: torch.save(document, p))


def load_checkpoint(path: Path, fingerprint: Mapping) -> dict:
    """Read a checkpoint (no code can run: ``weights_only=True``) and check its fingerprint."""
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an optfusion-lab checkpoint")
    stored, now = document["fingerprint"], dict(fingerprint)
    if not fingerprints_match(stored, now):
        keys = fingerprint_differences(stored, now)
        details = "; ".join(f"{k}: {stored.get(k)!r} then, {now.get(k)!r} now" for k in keys[:4])
        raise ValueError(
            f"{path}: the checkpoint was written with other data or options ({details}); "
            "start a new run directory or drop --resume"
        )
    return document


def restore_checkpoint(document: dict, model: nn.Module, optimizer, callbacks: Sequence) -> None:
    """Load a checkpoint's model, optimizer, callback and RNG states (the loop state is the
    caller's)."""
    model.load_state_dict(document["model"])
    optimizer.load_state_dict(document["optimizer"])
    for cb, state in zip(callbacks, document["callbacks"], strict=False):
        if state is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(state)
    set_rng_state(document["rng"])
