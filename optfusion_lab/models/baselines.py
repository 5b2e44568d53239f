"""Hand-made CTR models with a fixed fusion design, built from ``optfusion_lab.components``.

Every model takes ``(num_features, num_fields, cfg)``, maps a LongTensor of global feature ids
(B, F) to logits (B,), and keeps its field embedding in ``self.embedding`` (the trainer gives it
its own optimizer group). Notation: F fields, D = cfg.embed_dim, d = F * D the flat width.
"""

import torch
from torch import nn

from optfusion_lab.components import (
    CIN,
    MLP,
    CrossLayerV1,
    CrossNetV1,
    CrossNetV2,
    FeatureEmbedding,
    FirstOrderTerm,
    FMInteraction,
    InnerProduct,
)
from optfusion_lab.components.sharing import FieldRegulation, build_bridge
from optfusion_lab.models.config import ModelConfig


class DNN(nn.Module):
    """FNN: flat embedding -> MLP -> Linear(., 1)."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, output_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        return self.mlp(e).squeeze(-1)  # (B,)


class IPNN(nn.Module):
    """IPNN: [all pairwise inner products, flat embedding] -> MLP -> Linear(., 1)."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.inner_product = InnerProduct(num_fields)
        self.mlp = MLP(
            d + self.inner_product.output_dim, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.embedding(x)  # (B, F, D)
        products = self.inner_product(v)  # (B, F*(F-1)/2)
        h = torch.cat([products, v.flatten(start_dim=1)], dim=1)  # (B, F*(F-1)/2 + d)
        return self.mlp(h).squeeze(-1)  # (B,)


class DeepFM(nn.Module):
    """DeepFM: first-order linear term + FM second-order term + MLP on the flat embedding."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.linear = FirstOrderTerm(num_features, cfg.embed_init_std)
        self.fm = FMInteraction()
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, output_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.embedding(x)  # (B, F, D)
        logit = self.linear(x) + self.fm(v) + self.mlp(v.flatten(start_dim=1))  # (B, 1)
        return logit.squeeze(-1)  # (B,)


class DCN(nn.Module):
    """DCN (parallel): CrossNet v1 beside an MLP on the flat embedding, concat, Linear(., 1)."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.cross = CrossNetV1(d, cfg.cross_layers)
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm)
        self.head = nn.Linear(d + self.mlp.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        h = torch.cat([self.cross(e), self.mlp(e)], dim=1)  # (B, d + mlp width)
        return self.head(h).squeeze(-1)  # (B,)


class XDeepFM(nn.Module):
    """xDeepFM: first-order linear term + CIN (sum-pooled, then Linear) + MLP, summed."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        cin_sizes = cfg.cin_sizes if cfg.cin_sizes is not None else (num_fields,) * 3
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.linear = FirstOrderTerm(num_features, cfg.embed_init_std)
        self.cin = CIN(num_fields, cin_sizes)
        self.cin_head = nn.Linear(self.cin.output_dim, 1)
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, output_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.embedding(x)  # (B, F, D)
        cin_logit = self.cin_head(self.cin(v))  # (B, 1)
        logit = self.linear(x) + cin_logit + self.mlp(v.flatten(start_dim=1))  # (B, 1)
        return logit.squeeze(-1)  # (B,)


class DCNV2Stacked(nn.Module):
    """DCN-V2 stacked: CrossNetV2 on the flat embedding, then MLP -> Linear(., 1)."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.cross = CrossNetV2(d, cfg.cross_layers, cfg.low_rank)
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm, output_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        return self.mlp(self.cross(e)).squeeze(-1)  # (B,)


class DCNV2Parallel(nn.Module):
    """DCN-V2 parallel: CrossNetV2 beside an MLP on the flat embedding, concat, Linear(., 1)."""

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        d = num_fields * cfg.embed_dim
        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.cross = CrossNetV2(d, cfg.cross_layers, cfg.low_rank)
        self.mlp = MLP(d, cfg.mlp_dims, cfg.dropout, cfg.batch_norm)
        self.head = nn.Linear(d + self.mlp.output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        h = torch.cat([self.cross(e), self.mlp(e)], dim=1)  # (B, d + mlp width)
        return self.head(h).squeeze(-1)  # (B,)


class EDCN(nn.Module):
    """EDCN: parallel cross and deep towers that share information at every layer.

    Chen et al., CIKM 2021. For each of the ``L = cfg.cross_layers`` layers (d = F * D everywhere):

    - regulation: two field-wise gates give each tower its own view of the shared input,
      ``x_in = R_c(s)`` and ``h_in = R_d(s)``; ``s = E`` (the flat embedding) for the first layer
      and the previous layer's bridge output after it;
    - cross: ``x = x0 * (x_in . w) + b + x_in`` (a DCN v1 layer) with ``x0 = R_c(E)`` of the first
      layer; deep: ``h = ReLU(W h_in + b)`` (width d);
    - bridge: ``f = bridge(x, h)``, the Hadamard product ``x * h`` by default
      (``cfg.bridge``; see ``optfusion_lab.components.sharing.BRIDGES``).

    The logit is ``Linear(3d, 1)([x, h, f])`` of the last layer. ``cfg.regulation_tau`` is the
    gates' temperature; ``cfg.regulation_batch_norm`` standardises every regulated tower input
    with a scalar batch norm, as the authors' code does by default: without it the product of
    small embeddings and small deep outputs shrinks at every layer and the model barely learns
    (see the README); ``cfg.regulation_eps`` is that norm's eps (1e-5, the authors' setting;
    the README says what it does on small samples). ``cfg.mlp_dims`` is ignored (deep layers
    have width d, as in EDCN); dropout and the MLP batch norm follow ``cfg``.
    """

    def __init__(self, num_features: int, num_fields: int, cfg: ModelConfig):
        super().__init__()
        if cfg.cross_layers < 1:
            raise ValueError("EDCN needs cross_layers >= 1")
        d = num_fields * cfg.embed_dim
        num_layers = cfg.cross_layers

        def regulation() -> nn.ModuleList:
            return nn.ModuleList(
                FieldRegulation(
                    num_fields,
                    cfg.embed_dim,
                    cfg.regulation_tau,
                    cfg.regulation_batch_norm,
                    cfg.regulation_eps,
                )
                for _ in range(num_layers)
            )

        self.embedding = FeatureEmbedding(num_features, cfg.embed_dim, cfg.embed_init_std)
        self.cross_regulation = regulation()
        self.deep_regulation = regulation()
        self.cross_layers = nn.ModuleList(CrossLayerV1(d) for _ in range(num_layers))
        self.deep_layers = nn.ModuleList(
            MLP(d, (d,), cfg.dropout, cfg.batch_norm) for _ in range(num_layers)
        )
        self.bridges = nn.ModuleList(build_bridge(cfg.bridge, d) for _ in range(num_layers))
        self.head = nn.Linear(3 * d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.embedding(x).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        x0 = None
        for reg_c, reg_d, cross, deep, bridge in zip(
            self.cross_regulation,
            self.deep_regulation,
            self.cross_layers,
            self.deep_layers,
            self.bridges,
            strict=True,
        ):
            cross_in, deep_in = reg_c(shared), reg_d(shared)  # (B, d) each
            if x0 is None:
                x0 = cross_in  # the cross tower's x0: its regulated embedding
            c = cross(x0, cross_in)  # (B, d)
            h = deep(deep_in)  # (B, d)
            shared = bridge(c, h)  # (B, d)
        return self.head(torch.cat([c, h, shared], dim=1)).squeeze(-1)  # (B, 3d) -> (B,)
