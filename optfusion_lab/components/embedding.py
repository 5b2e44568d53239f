"""Field embeddings: one shared table looked up with global feature ids."""

import torch
from torch import nn


class FeatureEmbedding(nn.Module):
    """One embedding table shared by all fields.

    The data pipeline already adds each field's offset, so an input id is a row of this table.
    Input: LongTensor (B, F) of global ids. Output: (B, F, D).
    """

    def __init__(self, num_features: int, embed_dim: int, init_std: float = 0.01):
        super().__init__()
        self.num_features = num_features
        self.embed_dim = embed_dim
        self.table = nn.Embedding(num_features, embed_dim)
        nn.init.normal_(self.table.weight, mean=0.0, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x)  # (B, F) -> (B, F, D)


def set_sparse_gradients(model: nn.Module, sparse: bool) -> int:
    """Make every embedding table of ``model`` give sparse (True) or dense (False) gradients;
    return how many tables there are.

    With sparse gradients a lookup's backward pass yields a sparse tensor holding only the
    rows the batch looked up, ``(B*F, D)`` values, instead of a dense ``(num_features, D)``
    gradient that is zero almost everywhere; the optimizer must then accept sparse gradients
    (:func:`optfusion_lab.train.make_optimizer` with ``embedding_update="sparse"`` sets both).
    The forward pass and the weights are the same either way. DistributedDataParallel reads the
    flag when it wraps the model, so set it before wrapping.
    """
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    for table in tables:
        table.sparse = sparse
    return len(tables)


class FirstOrderTerm(nn.Module):
    """The linear part of FM-style models: ``bias + sum_f w[x_f]``.

    ``w`` is a per-feature scalar, i.e. an embedding table of width 1.
    Input: LongTensor (B, F) of global ids. Output: (B, 1).
    """

    def __init__(self, num_features: int, init_std: float = 0.01):
        super().__init__()
        self.weight = FeatureEmbedding(num_features, 1, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight(x)  # (B, F, 1)
        return w.sum(dim=1) + self.bias  # (B, 1)
