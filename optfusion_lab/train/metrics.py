"""Prediction and metrics: click probabilities in batches, AUC and LogLoss (scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .device import autocast


def as_tensor(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``features`` as a CPU tensor (a memory map is read into RAM once)."""
    if isinstance(features, torch.Tensor):
        return features
    return torch.from_numpy(np.array(features, dtype=np.int32, copy=True))


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    batch_size: int = 16384,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Click probabilities (n,) float64 of ``features`` (n, F), in eval mode, in batches.

    ``probs = predict_proba(model, data.arrays("test")[0])``

    ``device`` defaults to the device of the model's parameters. The model's train/eval mode is
    restored afterwards.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x = as_tensor(features)
    was_training = model.training
    model.eval()
    try:
        logits = []
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, non_blocking=True)
            with autocast(device, amp):
                logits.append(model(batch).float())  # (B,)
        if not logits:
            return np.zeros(0, dtype=np.float64)
        probs = torch.sigmoid(torch.cat(logits))  # (n,), one transfer below
        return probs.cpu().numpy().astype(np.float64)
    finally:
        model.train(was_training)


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC and LogLoss (scikit-learn); a split with one class only is a clear ValueError."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"AUC needs both classes, but all {len(labels)} labels are equal")
    return {
        "auc": float(roc_auc_score(labels, probs)),
        "logloss": float(log_loss(labels, probs, labels=[0.0, 1.0])),
    }


def evaluate(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    batch_size: int = 16384,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """``{"auc", "logloss"}`` of ``model`` on one split (no_grad, eval mode).

    ``metrics = evaluate(model, *data.arrays("valid"))``
    """
    return binary_metrics(labels, predict_proba(model, features, batch_size, device, amp))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
