"""Plain PyTorch baselines and a plain training loop: the yardsticks for the library's models.

What it is
----------
Deliberately small, independent re-implementations of DCN (v1, parallel form), and of FNN
(``LeanDNN``), DeepFM (``LeanDeepFM``) and DCN-V2 stacked / parallel (``LeanDCNV2``), that use
none of ``optfusion_lab``'s components, models or training code. They only read the same
prepared arrays (``PreparedData.open(dir).arrays(split)``), so that the library's models can be
compared with them on speed (``bench_train.py``) and on accuracy (``compare_real.py``). Each
draws its initial weights in the library's order: with the same seed, ``build_plain(name, ...)``
starts from the same weights as ``build_model(name, ...)``, and :func:`train_lean` sees the
batches in the same order as ``optfusion_lab.train.fit``.

The DCN (F fields, D = embed_dim, d = F * D)::

    E   = flatten(Embedding(ids))                      # one table over global ids, (B, d)
    x_0 = E,  x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l  # k CrossNet-v1 layers, (B, d)
    h   = MLP(E)                                       # [Linear -> ReLU] per width, (B, m)
    logit = Linear(d + m, 1)([x_k, h])                 # (B,)

Initialisation: embedding N(0, 0.01) (the reference's), cross weights U(-1/sqrt(d), 1/sqrt(d))
(what ``nn.Linear(d, 1)`` draws), cross biases 0, ``nn.Linear`` defaults elsewhere.

Training loop (:func:`train_lean`): Adam with two parameter groups (the embedding table:
``lr_emb`` / ``l2_emb``; the rest: ``lr_nn`` / ``l2_nn``; coupled L2 via ``weight_decay``), BCE
with logits, one ``torch.randperm`` per epoch (generator seeded with ``seed + epoch``), validation
AUC and LogLoss (scikit-learn) after every epoch, early stopping on validation AUC with
``patience`` (1 by default, as the reference), the best epoch's weights restored, then the test
metrics. The training split is copied into memory once and cast to int64 once; there is no
per-field Python loop anywhere (the only Python loops run over cross layers and batches).

How to run
----------
As a module (the benchmarks import it)::

    from lean_dcn import LeanConfig, LeanDCN, train_lean

or on a prepared dataset directory from the command line::

    .venv/bin/python benchmarks/lean_dcn.py PREPARED_DIR --epochs 3 --batch-size 1024 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from optfusion_lab.data.dataset import PreparedData


@dataclass(frozen=True)
class LeanConfig:
    """Sizes and training settings of the lean DCN (defaults: the benchmark's DCN)."""

    embed_dim: int = 16  # D
    mlp_dims: tuple[int, ...] = (400, 400, 400)  # hidden widths of the deep tower
    cross_layers: int = 3  # k CrossNet-v1 layers
    embed_init_std: float = 0.01  # embedding init N(0, std), as the reference
    batch_size: int = 4096  # training batch size
    epochs: int = 5  # upper bound on epochs (early stopping may stop sooner)
    patience: int = 1  # epochs without a better valid AUC before stopping
    lr_emb: float = 2e-3  # Adam lr of the embedding table (DCN Criteo preset)
    l2_emb: float = 3e-6  # Adam weight_decay of the embedding table
    lr_nn: float = 2e-3  # Adam lr of every other parameter
    l2_nn: float = 3e-6  # Adam weight_decay of every other parameter
    eval_batch_size: int = 16384  # batch size of evaluation
    seed: int = 0  # seeds the initialisation and the batch order


class LeanDCN(nn.Module):
    """DCN v1, parallel: ``Linear([CrossNet(E), MLP(E)])``. Input (B, F) ids, output (B,) logits."""

    def __init__(
        self,
        num_features: int,
        num_fields: int,
        embed_dim: int = 16,
        mlp_dims: tuple[int, ...] = (400, 400, 400),
        cross_layers: int = 3,
        embed_init_std: float = 0.01,
    ):
        super().__init__()
        d = num_fields * embed_dim
        self.embedding = nn.Embedding(num_features, embed_dim)
        nn.init.normal_(self.embedding.weight, 0.0, embed_init_std)
        bound = 1.0 / math.sqrt(d)
        self.cross_w = nn.Parameter(torch.empty(cross_layers, d).uniform_(-bound, bound))  # (k, d)
        self.cross_b = nn.Parameter(torch.zeros(cross_layers, d))  # (k, d)
        layers: list[nn.Module] = []
        width = d
        for hidden in mlp_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(d + width, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(ids).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x  # (B, d): x0 * (x . w) + b + x
        h = torch.cat([x, self.mlp(x0)], dim=1)  # (B, d + m)
        return self.head(h).squeeze(-1)  # (B,)


def _plain_mlp(width: int, dims: tuple[int, ...], output_dim: int | None) -> nn.Sequential:
    """``[Linear -> ReLU] * len(dims)`` then an optional ``Linear(., output_dim)``."""
    layers: list[nn.Module] = []
    for hidden in dims:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    if output_dim is not None:
        layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def _plain_embedding(num_features: int, embed_dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(num_features, embed_dim)
    nn.init.normal_(table.weight, 0.0, std)
    return table


class LeanDNN(nn.Module):
    """FNN: ``MLP(E) -> Linear(., 1)``."""

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig):
        super().__init__()
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.mlp = _plain_mlp(num_fields * cfg.embed_dim, cfg.mlp_dims, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embedding(ids).flatten(start_dim=1)).squeeze(-1)  # (B, d) -> (B,)


class LeanDeepFM(nn.Module):
    """DeepFM: ``b + sum_f w[x_f] + sum_{i<j} <v_i, v_j> + MLP(E)``."""

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig):
        super().__init__()
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.first_order = _plain_embedding(num_features, 1, cfg.embed_init_std)  # w, (n, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp = _plain_mlp(num_fields * cfg.embed_dim, cfg.mlp_dims, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.embedding(ids)  # (B, F, D)
        linear = self.first_order(ids).sum(dim=1) + self.bias  # (B, 1)
        fm = 0.5 * (v.sum(dim=1) ** 2 - (v**2).sum(dim=1)).sum(dim=1, keepdim=True)  # (B, 1)
        return (linear + fm + self.mlp(v.flatten(start_dim=1))).squeeze(-1)  # (B,)


class LeanDCNV2(nn.Module):
    """DCN-V2 with full-rank layers ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``; ``stacked``:
    ``MLP(cross(E)) -> Linear``, else parallel: ``Linear([cross(E), MLP(E)])``."""

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig, stacked: bool):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.stacked = stacked
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.cross = nn.ModuleList(nn.Linear(d, d) for _ in range(cfg.cross_layers))
        self.mlp = _plain_mlp(d, cfg.mlp_dims, 1 if stacked else None)
        width = cfg.mlp_dims[-1] if cfg.mlp_dims else d
        self.head = None if stacked else nn.Linear(d + width, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x0 = self.embedding(ids).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        x = x0
        for linear in self.cross:
            x = x0 * linear(x) + x  # (B, d)
        if self.stacked:
            return self.mlp(x).squeeze(-1)  # (B,)
        return self.head(torch.cat([x, self.mlp(x0)], dim=1)).squeeze(-1)  # (B, d + m) -> (B,)


# The plain counterparts of the library's baselines, by the library's model name. Each draws
# its initial weights in the library's order, so the same seed starts both from the same weights.
PLAIN_MODELS: dict[str, Callable[[int, int, LeanConfig], nn.Module]] = {
    "dnn": LeanDNN,
    "deepfm": LeanDeepFM,
    "dcn": lambda n, f, cfg: LeanDCN(
        n, f, cfg.embed_dim, cfg.mlp_dims, cfg.cross_layers, cfg.embed_init_std
    ),
    "dcnv2-stacked": lambda n, f, cfg: LeanDCNV2(n, f, cfg, stacked=True),
    "dcnv2-parallel": lambda n, f, cfg: LeanDCNV2(n, f, cfg, stacked=False),
}


def build_plain(name: str, num_features: int, num_fields: int, cfg: LeanConfig) -> nn.Module:
    """The plain model called ``name``, initialised from ``torch.manual_seed(cfg.seed)``."""
    if name not in PLAIN_MODELS:
        raise ValueError(f"no plain version of {name!r}; plain models: {', '.join(PLAIN_MODELS)}")
    torch.manual_seed(cfg.seed)
    return PLAIN_MODELS[name](num_features, num_fields, cfg)


def build_lean(num_features: int, num_fields: int, cfg: LeanConfig) -> LeanDCN:
    """A LeanDCN with ``cfg``'s sizes, initialised from ``torch.manual_seed(cfg.seed)``."""
    torch.manual_seed(cfg.seed)
    return LeanDCN(
        num_features, num_fields, cfg.embed_dim, cfg.mlp_dims, cfg.cross_layers, cfg.embed_init_std
    )


def make_lean_optimizer(model: nn.Module, cfg: LeanConfig) -> torch.optim.Adam:
    """Adam with two groups: every ``nn.Embedding`` table (DeepFM's first-order weights too),
    and everything else."""
    embedding = [p for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()]
    embedding_ids = {id(p) for p in embedding}
    rest = [p for p in model.parameters() if id(p) not in embedding_ids]
    return torch.optim.Adam(
        [
            {"params": embedding, "lr": cfg.lr_emb, "weight_decay": cfg.l2_emb},
            {"params": rest, "lr": cfg.lr_nn, "weight_decay": cfg.l2_nn},
        ]
    )


def load_split(data: PreparedData, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split in memory: ids (n, F) int64 (cast once) and labels (n,) float32."""
    x, y = data.arrays(split)
    ids = torch.from_numpy(np.array(x, dtype=np.int64))  # memmap -> RAM, int32 -> int64 once
    labels = torch.from_numpy(np.array(y, dtype=np.float32))
    return ids, labels


@torch.no_grad()
def predict_lean(model: nn.Module, ids: torch.Tensor, batch_size: int = 16384) -> np.ndarray:
    """Click probabilities (n,) float64, in eval mode (the mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    logits = [model(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    model.train(was_training)
    return torch.sigmoid(torch.cat(logits)).double().numpy()


def evaluate_lean(
    model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, batch_size: int = 16384
) -> dict[str, float]:
    """AUC and LogLoss (scikit-learn) of ``model`` on one split."""
    probs = predict_lean(model, ids, batch_size)
    y = labels.double().numpy()
    return {"auc": float(roc_auc_score(y, probs)), "logloss": float(log_loss(y, probs))}


def train_lean(
    model: nn.Module,
    data: PreparedData,
    cfg: LeanConfig,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Train with early stopping on valid AUC, restore the best epoch, return the test metrics.

    ``on_step(step, epoch)`` (optional, for benchmarks) runs after every optimizer step; it may
    raise to stop training. Returned: test_auc, test_logloss, best_epoch, best_valid_auc,
    epochs_run, train_seconds (training steps only), samples_per_second and the history.
    """
    optimizer = make_lean_optimizer(model, cfg)
    x_train, y_train = load_split(data, "train")
    x_valid, y_valid = load_split(data, "valid")
    n = len(y_train)
    best_auc, best_epoch, best_state, stale = -math.inf, 0, None, 0
    history, train_seconds, samples, step = [], 0.0, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch - 1))
        loss_sum = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            x, y = x_train[batch], y_train[batch]  # (B, F), (B,)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(y)
            step += 1
            if on_step is not None:
                on_step(step, epoch)
        seconds = time.perf_counter() - started
        train_seconds += seconds
        samples += n
        valid = evaluate_lean(model, x_valid, y_valid, cfg.eval_batch_size)
        history.append(
            {"epoch": epoch, "train_loss": float(loss_sum) / n, "valid_auc": valid["auc"],
             "valid_logloss": valid["logloss"], "train_seconds": seconds}
        )  # fmt: skip
        if valid["auc"] > best_auc:
            best_auc, best_epoch, stale = valid["auc"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    x_test, y_test = load_split(data, "test")
    test = evaluate_lean(model, x_test, y_test, cfg.eval_batch_size)
    return {
        "test_auc": test["auc"],
        "test_logloss": test["logloss"],
        "best_epoch": best_epoch,
        "best_valid_auc": best_auc,
        "epochs_run": len(history),
        "train_seconds": train_seconds,
        "samples_per_second": samples / train_seconds if train_seconds > 0 else math.inf,
        "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared dataset directory")
    parser.add_argument("--epochs", type=int, default=LeanConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=LeanConfig.batch_size)
    parser.add_argument("--patience", type=int, default=LeanConfig.patience)
    parser.add_argument("--seed", type=int, default=LeanConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = LeanConfig(
        batch_size=args.batch_size, epochs=args.epochs, patience=args.patience, seed=args.seed
    )
    data = PreparedData.open(args.data)
    model = build_lean(data.num_features, data.num_fields, cfg)
    result = train_lean(model, data, cfg)
    print(json.dumps({"config": asdict(cfg), **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
