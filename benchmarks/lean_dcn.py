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
import itertools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models import ModelConfig, build_model


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
    cin_sizes: tuple[int, ...] | None = None  # xDeepFM CIN sizes; None means (F, F, F)
    regulation_tau: float = 1.0  # EDCN gate temperature
    regulation_batch_norm: bool = True  # EDCN scalar batch norm after each gate (else gates x F)
    regulation_eps: float = 1e-5  # EDCN: eps of that batch norm


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


class LeanIPNN(nn.Module):
    """IPNN (Qu et al., 2016), inner-product layer: ``MLP([<v_i, v_j> for i < j, E]) -> Linear``.

    The pairs are in row-major order of (i, j); the product layer is written as the element-wise
    product of two gathered copies of the embedding, summed over D (no Gram matrix).
    """

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig):
        super().__init__()
        rows, cols = zip(*itertools.combinations(range(num_fields), 2), strict=True)
        self.register_buffer("rows", torch.tensor(rows), persistent=False)  # i of each pair, (P,)
        self.register_buffer("cols", torch.tensor(cols), persistent=False)  # j of each pair, (P,)
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        width = len(rows) + num_fields * cfg.embed_dim
        self.mlp = _plain_mlp(width, cfg.mlp_dims, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.embedding(ids)  # (B, F, D)
        products = (v[:, self.rows] * v[:, self.cols]).sum(dim=2)  # (B, P, D) -> (B, P)
        h = torch.cat([products, v.flatten(start_dim=1)], dim=1)  # (B, P + d)
        return self.mlp(h).squeeze(-1)  # (B,)


class LeanXDeepFM(nn.Module):
    """xDeepFM (Lian et al., 2018): ``b + sum_f w[x_f] + w_cin . p + MLP(E)``.

    CIN layer k (the paper's equation 6, with a bias per map):
    ``X^k[h, :] = sum_{i, j} W^k[h, i, j] * (X^{k-1}[i, :] * X^0[j, :]) + c^k[h]``, ``X^0 = V``
    (B, F, D); ``p`` concatenates the sum over D of every layer's maps; ``w_cin . p`` has a bias.
    """

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig):
        super().__init__()
        sizes = cfg.cin_sizes if cfg.cin_sizes is not None else (num_fields,) * 3
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.first_order = _plain_embedding(num_features, 1, cfg.embed_init_std)  # w, (n, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        previous = [num_fields, *sizes[:-1]]
        self.cin_w = nn.ParameterList(  # W^k, (H_k, H_{k-1}, F)
            nn.Parameter(torch.zeros(out, h, num_fields))
            for out, h in zip(sizes, previous, strict=True)
        )
        self.cin_b = nn.ParameterList(nn.Parameter(torch.zeros(out)) for out in sizes)  # c^k
        self.cin_head = nn.Linear(sum(sizes), 1)
        self.mlp = _plain_mlp(num_fields * cfg.embed_dim, cfg.mlp_dims, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.embedding(ids)  # (B, F, D)
        x, pooled = v, []
        for w, c in zip(self.cin_w, self.cin_b, strict=True):
            z = (x.unsqueeze(2) * v.unsqueeze(1)).flatten(1, 2)  # X^{k-1}_i * X^0_j: (B, H*F, D)
            x = w.flatten(1) @ z + c.view(1, -1, 1)  # sum over (i, j): (B, H_k, D)
            pooled.append(x.sum(dim=2))  # (B, H_k)
        cin = self.cin_head(torch.cat(pooled, dim=1))  # (B, 1)
        linear = self.first_order(ids).sum(dim=1) + self.bias  # (B, 1)
        return (linear + cin + self.mlp(v.flatten(start_dim=1))).squeeze(-1)  # (B,)


class LeanEDCN(nn.Module):
    """EDCN (Chen et al., CIKM 2021) with the Hadamard bridge, L = ``cfg.cross_layers`` layers.

    Per layer l, with ``s_1 = E`` (flat, (B, d)) and ``g(w) = softmax(w / tau)`` repeated over each
    field's D coordinates::

        x_in = N(g(wc_l) * s_l),  h_in = N(g(wd_l) * s_l)   # regulation (N: scalar batch norm)
        x_l  = x0 * (x_in . u_l) + b_l + x_in               # cross, x0 = x_in of layer 1
        h_l  = ReLU(W_l h_in + c_l)                         # deep, width d
        s_{l+1} = x_l * h_l                                 # bridge (Hadamard)
        logit = Linear(3d, 1)([x_L, h_L, s_{L+1}])

    ``N`` standardises with one mean and variance over the batch and all d coordinates (a
    ``BatchNorm1d(1)`` over the B*d values, eps ``cfg.regulation_eps``, cumulative running
    statistics); without ``cfg.regulation_batch_norm`` it is the factor F instead.
    """

    def __init__(self, num_features: int, num_fields: int, cfg: LeanConfig):
        super().__init__()
        d, layers = num_fields * cfg.embed_dim, cfg.cross_layers
        self.embed_dim, self.tau = cfg.embed_dim, cfg.regulation_tau
        self.embedding = _plain_embedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.gate_cross = nn.Parameter(torch.ones(layers, num_fields))  # wc_l, (L, F)
        self.gate_deep = nn.Parameter(torch.ones(layers, num_fields))  # wd_l, (L, F)
        self.scale = 1.0 if cfg.regulation_batch_norm else float(num_fields)
        if cfg.regulation_batch_norm:

            def norms() -> nn.ModuleList:
                return nn.ModuleList(
                    nn.BatchNorm1d(1, eps=cfg.regulation_eps, momentum=None) for _ in range(layers)
                )

            self.norm_cross, self.norm_deep = norms(), norms()
        else:
            self.norm_cross = self.norm_deep = None
        self.cross_u = nn.Parameter(torch.zeros(layers, d))  # u_l, (L, d)
        self.cross_b = nn.Parameter(torch.zeros(layers, d))  # b_l, (L, d)
        self.deep = nn.ModuleList(nn.Linear(d, d) for _ in range(layers))
        self.head = nn.Linear(3 * d, 1)

    def _regulate(self, s: torch.Tensor, w: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
        gate = torch.softmax(w / self.tau, dim=0).repeat_interleave(self.embed_dim)  # (d,)
        gated = s * (self.scale * gate)  # (B, d)
        if norm is None:
            return gated
        return norm(gated.reshape(-1, 1)).view_as(gated)  # one channel of B*d values

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.embedding(ids).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        x0 = None
        for layer in range(len(self.deep)):
            norm_c = self.norm_cross[layer] if self.norm_cross is not None else None
            norm_d = self.norm_deep[layer] if self.norm_deep is not None else None
            x_in = self._regulate(s, self.gate_cross[layer], norm_c)
            h_in = self._regulate(s, self.gate_deep[layer], norm_d)
            x0 = x_in if x0 is None else x0
            x = x0 * (x_in @ self.cross_u[layer]).unsqueeze(1) + self.cross_b[layer] + x_in
            h = torch.relu(self.deep[layer](h_in))  # (B, d)
            s = x * h  # (B, d)
        return self.head(torch.cat([x, h, s], dim=1)).squeeze(-1)  # (B, 3d) -> (B,)


# The plain counterparts of the library's baselines, by the library's model name. The first five
# draw their initial weights in the library's order, so the same seed starts both from the same
# weights; IPNN, xDeepFM and EDCN are given the library model's initial weights instead
# (:func:`plain_from_library`).
PLAIN_MODELS: dict[str, Callable[[int, int, LeanConfig], nn.Module]] = {
    "dnn": LeanDNN,
    "deepfm": LeanDeepFM,
    "dcn": lambda n, f, cfg: LeanDCN(
        n, f, cfg.embed_dim, cfg.mlp_dims, cfg.cross_layers, cfg.embed_init_std
    ),
    "dcnv2-stacked": lambda n, f, cfg: LeanDCNV2(n, f, cfg, stacked=True),
    "dcnv2-parallel": lambda n, f, cfg: LeanDCNV2(n, f, cfg, stacked=False),
    "ipnn": LeanIPNN,
    "xdeepfm": LeanXDeepFM,
    "edcn": LeanEDCN,
}
WEIGHTS_FROM_LIBRARY = ("ipnn", "xdeepfm", "edcn")


def _renamed(state: dict, rules: list[tuple[str, str]]) -> dict:
    """``state`` with every key rewritten by the first regex rule that matches it."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise KeyError(f"no plain name for library weight {key!r}")
    return out


def _stacked(state: dict, pattern: str, count: int) -> torch.Tensor:
    """Stack ``state[pattern.format(l)]`` (flattened) over l = 0..count-1: (count, ...)."""
    return torch.stack([state.pop(pattern.format(layer)).reshape(-1) for layer in range(count)])


def plain_state(name: str, library_state: dict, cfg: LeanConfig) -> dict:
    """The library model ``name``'s state_dict under the plain model's names (the shapes may
    differ; every tensor holds its values in the plain tensor's row-major order)."""
    state = dict(library_state)
    embedding = [(r"embedding\.table\.weight", "embedding.weight")]
    mlp = [(r"mlp\.layers\.(\d+)\.(weight|bias)", r"mlp.\1.\2")]
    first_order = [
        (r"linear\.weight\.table\.weight", "first_order.weight"),
        (r"linear\.bias", "bias"),
    ]
    head = [(r"head\.(weight|bias)", r"head.\1")]
    if name in ("dnn", "ipnn"):
        return _renamed(state, embedding + mlp)
    if name == "deepfm":
        return _renamed(state, embedding + first_order + mlp)
    if name == "dcn":
        out = {
            "cross_w": _stacked(state, "cross.layers.{}.w.weight", cfg.cross_layers),
            "cross_b": _stacked(state, "cross.layers.{}.b", cfg.cross_layers),
        }
        return {**out, **_renamed(state, embedding + mlp + head)}
    if name in ("dcnv2-stacked", "dcnv2-parallel"):
        cross = [(r"cross\.layers\.(\d+)\.linear\.(weight|bias)", r"cross.\1.\2")]
        return _renamed(state, embedding + cross + mlp + head)
    if name == "xdeepfm":
        out = {}
        for key in [k for k in state if k.startswith("cin.layers.")]:
            layer, kind = re.fullmatch(r"cin\.layers\.(\d+)\.conv\.(weight|bias)", key).groups()
            # Conv1d weight (H_k, H_{k-1} * F, 1), input map i * F + j: W^k[h, i, j] in order
            out[f"cin_{kind[0]}.{layer}"] = state.pop(key)
        cin_head = [(r"cin_head\.(weight|bias)", r"cin_head.\1")]
        return {**out, **_renamed(state, embedding + first_order + cin_head + mlp)}
    if name == "edcn":
        layers = cfg.cross_layers
        out = {
            "gate_cross": _stacked(state, "cross_regulation.{}.gate_logits", layers),
            "gate_deep": _stacked(state, "deep_regulation.{}.gate_logits", layers),
            "cross_u": _stacked(state, "cross_layers.{}.w.weight", layers),
            "cross_b": _stacked(state, "cross_layers.{}.b", layers),
        }
        rules = [
            (r"cross_regulation\.(\d+)\.norm\.(\w+)", r"norm_cross.\1.\2"),
            (r"deep_regulation\.(\d+)\.norm\.(\w+)", r"norm_deep.\1.\2"),
            (r"deep_layers\.(\d+)\.layers\.0\.(weight|bias)", r"deep.\1.\2"),
        ]
        return {**out, **_renamed(state, embedding + rules + head)}
    raise ValueError(f"no plain version of {name!r}; plain models: {', '.join(PLAIN_MODELS)}")


def plain_from_library(
    name: str, library_model: nn.Module, num_features: int, num_fields: int, cfg: LeanConfig
) -> nn.Module:
    """The plain model ``name`` holding ``library_model``'s weights (and batch-norm statistics)."""
    plain = PLAIN_MODELS[name](num_features, num_fields, cfg)
    shapes = {key: value.shape for key, value in plain.state_dict().items()}
    state = plain_state(name, library_model.state_dict(), cfg)  # row-major order kept
    plain.load_state_dict({k: v.reshape(shapes.get(k, v.shape)) for k, v in state.items()})
    return plain


def build_plain(name: str, num_features: int, num_fields: int, cfg: LeanConfig) -> nn.Module:
    """The plain model called ``name``, with the initial weights ``build_model(name, ...)`` draws
    after ``torch.manual_seed(cfg.seed)`` (the library model with ``cfg``'s sizes)."""
    if name not in PLAIN_MODELS:
        raise ValueError(f"no plain version of {name!r}; plain models: {', '.join(PLAIN_MODELS)}")
    torch.manual_seed(cfg.seed)
    if name not in WEIGHTS_FROM_LIBRARY:
        return PLAIN_MODELS[name](num_features, num_fields, cfg)
    # only the initial weights come from the library; the plain model computes on its own
    library = build_model(name, num_features, num_fields, library_config(cfg))
    return plain_from_library(name, library, num_features, num_fields, cfg)


def library_config(cfg: LeanConfig) -> ModelConfig:
    """The library ModelConfig with ``cfg``'s sizes."""
    return ModelConfig(
        embed_dim=cfg.embed_dim,
        mlp_dims=cfg.mlp_dims,
        cross_layers=cfg.cross_layers,
        cin_sizes=cfg.cin_sizes,
        embed_init_std=cfg.embed_init_std,
        regulation_tau=cfg.regulation_tau,
        regulation_batch_norm=cfg.regulation_batch_norm,
        regulation_eps=cfg.regulation_eps,
    )


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
