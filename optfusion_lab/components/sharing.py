"""EDCN's information-sharing modules: the bridge between two towers and field-wise regulation.

From Chen et al., "Enhancing Explicit and Implicit Feature Interactions via Information Sharing
for Parallel Deep CTR Models" (CIKM 2021). Notation: B batch, F fields, D embedding dim,
d = F * D the flat width of both towers.

- A *bridge* ``f(x, h)`` mixes the cross output ``x`` and the deep output ``h`` of one layer
  (both (B, d)) into one (B, d) tensor; the paper studies four interaction functions
  (:data:`BRIDGES`), the Hadamard product being its default.
- A *regulation* module gives each tower its own view of a shared input: one gate per field,
  ``g = softmax(w / tau)`` over the F fields, multiplies the field's D coordinates.
"""

import torch
from torch import nn


class HadamardBridge(nn.Module):
    """``f(x, h) = x * h`` (element-wise product; the paper's default)."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x * h  # (B, d)


class AddBridge(nn.Module):
    """``f(x, h) = x + h`` (pointwise addition)."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + h  # (B, d)


class ConcatBridge(nn.Module):
    """``f(x, h) = ReLU(W [x; h] + b)`` with ``W`` of shape (d, 2d) (concatenation)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([x, h], dim=1)  # (B, 2d)
        return torch.relu(self.linear(xh))  # (B, d)


class AttentionWeights(nn.Module):
    """``a(v) = softmax(W2 ReLU(W1 v + b1))`` over the d coordinates; (B, d) -> (B, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.hidden = nn.Linear(dim, dim)  # W1, b1
        self.score = nn.Linear(dim, dim, bias=False)  # W2

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.score(torch.relu(self.hidden(v))), dim=1)  # (B, d)


class AttentionBridge(nn.Module):
    """``f(x, h) = a_x(x) * x + a_h(h) * h`` (attention pooling; one attention net per input)."""

    def __init__(self, dim: int):
        super().__init__()
        self.attention_x = AttentionWeights(dim)
        self.attention_h = AttentionWeights(dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.attention_x(x) * x + self.attention_h(h) * h  # (B, d)


# The paper's four interaction functions, keyed by the name ModelConfig.bridge takes.
BRIDGES: dict[str, type[nn.Module]] = {
    "hadamard": HadamardBridge,
    "add": AddBridge,
    "concat": ConcatBridge,
    "attention": AttentionBridge,
}


def build_bridge(name: str, dim: int) -> nn.Module:
    """The bridge called ``name`` for width ``dim``; a ValueError listing the names otherwise."""
    if name not in BRIDGES:
        raise ValueError(f"unknown bridge {name!r}; valid bridges: {', '.join(BRIDGES)}")
    return BRIDGES[name](dim)


class FieldRegulation(nn.Module):
    """Field-wise gating of a flat input: field f is multiplied by ``g_f = softmax(w / tau)_f``.

    ``w`` (F,) starts at ones, so every field starts with the gate 1/F (the paper's
    ``g = softmax(w / tau)``, initialised as in the authors' code). Without ``batch_norm`` the
    gated input is multiplied by F (our choice): the gates then start at 1 and the tower input
    keeps the embedding's scale; with the paper's sum-to-one gates alone the Hadamard bridge of
    EDCN shrinks the signal so far that the model does not learn. With ``batch_norm`` the gated
    input is then standardised by *one* mean and variance over all its coordinates and the batch
    (a scalar batch norm, as in the authors' code): it rescales the whole tower input without
    undoing the relative gates of the fields (a per-coordinate batch norm would cancel them).
    Its ``eps`` is PyTorch's 1e-5 by default, as in the authors' code: with embeddings drawn
    from N(0, 0.01) and gates of 1/F the gated variance is far below it, so the norm acts as a
    gain of up to ``1 / sqrt(eps)`` rather than a standardisation as long as the variance stays
    below ``eps`` (on small samples: the whole run, see ``benchmarks/edcn_probe.py``).
    Its running statistics are a cumulative average (``momentum=None``), so a short training
    run leaves no trace of the default initial variance of 1 in evaluation mode.
    Input and output: (B, F*D).
    """

    def __init__(
        self,
        num_fields: int,
        embed_dim: int,
        tau: float = 1.0,
        batch_norm: bool = False,
        eps: float = 1e-5,
    ):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"the regulation temperature tau must be positive, got {tau}")
        if eps <= 0:
            raise ValueError(f"the regulation batch norm's eps must be positive, got {eps}")
        self.num_fields = num_fields
        self.embed_dim = embed_dim
        self.tau = tau
        self.gate_logits = nn.Parameter(torch.ones(num_fields))  # w
        self.norm = nn.BatchNorm1d(1, eps=eps, momentum=None) if batch_norm else None
        self.scale = 1.0 if batch_norm else float(num_fields)  # F without the norm (see above)

    def gate(self) -> torch.Tensor:
        """The field gates ``softmax(w / tau)``: (F,), positive, summing to 1."""
        return torch.softmax(self.gate_logits / self.tau, dim=0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        fields = h.view(h.shape[0], self.num_fields, self.embed_dim)  # (B, d) -> (B, F, D)
        gate = self.scale * self.gate()  # (F,)
        gated = (fields * gate.view(1, -1, 1)).flatten(start_dim=1)  # (B, F, D) -> (B, d)
        if self.norm is None:
            return gated
        return self.norm(gated.unsqueeze(1)).squeeze(1)  # (B, 1, d): one channel -> (B, d)
