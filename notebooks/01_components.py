# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The components of a deep CTR model
#
# Every model of the course (the hand-made baselines and the fusion networks OptFusion searches)
# is built from the same few blocks. Here each block gets its equation, a from-scratch version in
# a few lines of PyTorch that is **asserted equal** to the library module, and a short account
# of what it can and cannot model.
#
# You will learn:
#
# 1. the shared **embedding** table and why a lookup is a one-hot matrix product;
# 2. the **MLP** (the *deep* component) and why it is piecewise linear;
# 3. **CrossNet v1** (DCN) and **CrossNet v2** (DCN-V2), the *shallow* components that build
#    explicit feature crosses of a bounded degree;
# 4. the **CIN** of xDeepFM, which crosses vector-wise, per embedding coordinate;
# 5. the **FM** second-order term and its $O(FD)$ identity, and the **inner products** of IPNN.
#
# Notation: $B$ rows in a batch, $F$ fields, $D$ the embedding dimension, $d = F D$ the flat width.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import torch
from torch import nn

from optfusion_lab.components import (
    CIN,
    MLP,
    CrossLayerV1,
    CrossNetV1,
    CrossNetV2,
    FeatureEmbedding,
    FMInteraction,
    InnerProduct,
)
from optfusion_lab.course import write_results
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.train import resolve_device

# %% tags=["parameters"]
samples_dir = "../data_samples"  # folder of the embedded samples (relative to notebooks/)
dataset = "criteo"  # which embedded sample feeds the components: criteo, avazu or kdd12
embed_dim = 4  # D, the embedding dimension
batch_size = 7  # rows in the example batch
num_layers = 3  # layers of the cross networks and the CIN
seed = 0  # seed of every random initialisation
device = "cpu"  # cpu, cuda or auto
output_dir = "../runs/course/01_components"  # this notebook's output folder

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(seed)
torch.set_default_dtype(torch.float64)  # exact comparisons with the from-scratch versions
dev = resolve_device(device)
files = {"criteo": "criteo_sample.txt.gz", "avazu": "avazu_sample.csv.gz",
         "kdd12": "kdd12_sample.tsv.gz"}
out = Path(output_dir)
prepare(Path(samples_dir) / files[dataset], out / "data" / dataset, PrepareConfig(dataset))
data = PreparedData.open(out / "data" / dataset)
x_train, _ = data.arrays("train")
ids = torch.tensor(np.array(x_train[:batch_size]), dtype=torch.long, device=dev)  # (B, F)
F, D = data.num_fields, embed_dim
d = F * D
print(f"{dataset}: F = {F} fields, {data.num_features:,} features; D = {D}, d = F*D = {d}")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float64 rounding."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)


# %% [markdown]
# ## 1. The embedding: one table, one lookup per field
#
# After preparation (notebook 00) field $f$'s value is a *global* id
# $i_f = \text{offset}_f + \text{id}_f$, so one table $E \in \mathbb{R}^{N \times D}$ serves all
# fields: $v_f = E[i_f]$. A lookup is the product of a one-hot row with the table,
# $v_f = \text{onehot}(i_f)\, E$: an embedding is a linear layer on one-hot features, computed
# without the zeros.

# %%
# NBVAL_CHECK_OUTPUT
embedding = FeatureEmbedding(data.num_features, D).to(dev)
v = embedding(ids)  # (B, F, D)
one_hot = nn.functional.one_hot(ids, data.num_features).to(v.dtype)  # (B, F, N)
v_scratch = one_hot @ embedding.table.weight  # (B, F, N) @ (N, D) -> (B, F, D)
assert v.shape == (batch_size, F, D)
assert same(v, v_scratch)
x0 = v.flatten(start_dim=1)  # (B, d): the flat input of every block below
print(f"field embeddings {tuple(v.shape)}, flat x0 {tuple(x0.shape)}")

# %% [markdown]
# ## 2. The MLP, the *deep* component
#
# $$h_{l+1} = \text{ReLU}(W_l h_l + b_l), \qquad h_0 = x_0$$
#
# **Can model:** any continuous function of $x_0$, given enough width. **But:** with ReLU the
# network is *piecewise linear* in its input, so a multiplicative interaction such as
# $x_i x_j$, or the inner product of two embeddings, is approximated by many linear pieces;
# learning inner products this way takes far more width and data than computing them (Rendle et
# al., 2020, *Neural Collaborative Filtering vs. Matrix Factorization Revisited*). That is why
# CTR models pair an MLP with an explicit crossing component.

# %%
mlp = MLP(d, [2 * d, d], output_dim=1).to(dev)


def mlp_scratch(x: torch.Tensor) -> torch.Tensor:
    linears = [m for m in mlp.layers if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        x = torch.relu(x @ layer.weight.T + layer.bias)
    return x @ linears[-1].weight.T + linears[-1].bias


assert same(mlp(x0), mlp_scratch(x0))
assert mlp(x0).shape == (batch_size, 1)

# %% [markdown]
# Piecewise linear, checked: along a line $x_0 + t u$, the MLP's second differences are zero
# except at the few steps where some ReLU switches on or off.

# %%
t = torch.linspace(-20, 20, 801, device=dev)[:, None]
direction = torch.randn(d, device=dev)
with torch.no_grad():
    along = mlp(x0[:1] + t * direction).squeeze(-1)  # (801,)
curvature = (along[2:] - 2 * along[1:-1] + along[:-2]).abs()
kinks = int((curvature > 1e-9).sum())
assert kinks < len(curvature) / 2  # linear on most steps, bent only where a ReLU switches
px.line(x=t.squeeze(-1).cpu(), y=along.cpu(), labels={"x": "t", "y": "MLP(x0 + t u)"},
        title=f"The MLP along a line: linear pieces ({kinks} of {len(curvature)} steps bend)")

# %% [markdown]
# ## 3. CrossNet v1 (DCN), the *shallow* component
#
# $$x_{l+1} = x_0 \,(w_l^\top x_l) + b_l + x_l$$
#
# Each layer costs $2d$ parameters. **Can model:** feature crosses of bounded degree: with
# $L$ layers (and zero biases) the output is a polynomial of degree $L + 1$ in $x_0$.
# **Cannot:** much else. Each layer's update $x_{l+1} - x_l - b_l$ is a multiple of $x_0$, so
# the crosses a layer adds all point along one direction.

# %%
cross = CrossNetV1(d, num_layers).to(dev)


def cross_v1_scratch(x0: torch.Tensor) -> torch.Tensor:
    x = x0
    for layer in cross.layers:
        x = x0 * (x @ layer.w.weight.T) + layer.b + x  # (B, d) * (B, 1) + (d,) + (B, d)
    return x


assert same(cross(x0), cross_v1_scratch(x0))
layer = cross.layers[0]
update = layer(x0, x0) - x0 - layer.b  # (B, d)
assert same(update, x0 * (update / x0).mean(dim=1, keepdim=True))  # a multiple of x0, per row

# %% [markdown]
# The polynomial degree, checked by finite differences: scale the input by $t$, and the
# $(L{+}2)$-th difference over $t = 0, 1, \dots$ vanishes while the $(L{+}1)$-th does not.
# (We zero the biases first; a bias adds lower-degree terms only.)

# %%
def degree_in_scale(block, x: torch.Tensor, max_degree: int = 8) -> int:
    """The degree of t -> block(t x) as a polynomial, found by finite differences."""
    with torch.no_grad():
        values = torch.stack([block(k * x).sum() for k in range(max_degree + 2)])
    for degree in range(max_degree + 1):
        diff = torch.diff(values, n=degree + 1)
        if diff.abs().max() <= 1e-9 * values.abs().max():
            return degree
    raise ValueError(f"degree above {max_degree}")


with torch.no_grad():
    for p in cross.parameters():
        if p.dim() == 1:
            p.zero_()  # the biases b_l
probe = torch.randn(1, d, device=dev)  # a unit-scale input: every degree's term is visible
cross_degree = degree_in_scale(cross, probe)
assert cross_degree == num_layers + 1
print(f"CrossNet v1 with {num_layers} layers: a polynomial of degree {cross_degree} in x0")

# %% [markdown]
# **A product, by construction.** One cross layer holds the product of two inputs exactly:
# with $w = e_j$ and $b = 0$, $x_0 (e_j^\top x_0) = x_0\, x_j$, whose coordinate $i$ is
# $x_i x_j$. Whether training *finds* such weights from a random start is another question,
# taken up in the exercises and, for whole models, over seeds in notebook 02.

# %%
pair = CrossLayerV1(d).to(dev)
with torch.no_grad():
    pair.w.weight.zero_()
    pair.w.weight[0, 1] = 1.0  # w = e_2 (0-based index 1)
    pair.b.zero_()
assert same(pair(x0, x0)[:, 0] - x0[:, 0], x0[:, 0] * x0[:, 1])  # x_1 * x_2, exactly

# %% [markdown]
# ## 4. CrossNet v2 (DCN-V2)
#
# $$x_{l+1} = x_0 \odot (W_l x_l + b_l) + x_l$$
#
# A full matrix $W_l$ ($d^2 + d$ parameters per layer) instead of v1's vector: the crosses of a
# layer no longer point along one direction. The degree stays $L + 1$. A low-rank
# $W = U V^\top$ brings the cost down to $2dr$.

# %%
cross_v2 = CrossNetV2(d, num_layers).to(dev)


def cross_v2_scratch(x0: torch.Tensor) -> torch.Tensor:
    x = x0
    for layer in cross_v2.layers:
        x = x0 * (x @ layer.linear.weight.T + layer.linear.bias) + x  # (B, d)
    return x


assert same(cross_v2(x0), cross_v2_scratch(x0))
with torch.no_grad():
    for layer in cross_v2.layers:
        layer.linear.bias.zero_()
assert degree_in_scale(cross_v2, probe) == num_layers + 1

# %% [markdown]
# ## 5. CIN (xDeepFM): crosses per embedding coordinate
#
# CIN keeps the field structure $(F, D)$. Layer $k$ crosses its $H_{k-1}$ feature maps with the
# $F$ field embeddings coordinate by coordinate and compresses the $H_{k-1} F$ products:
#
# $$X^{k}_{o,:} = \sum_{h=1}^{H_{k-1}} \sum_{f=1}^{F} W^{k}_{o,h,f}\,
#   \big(X^{k-1}_{h,:} \odot X^{0}_{f,:}\big) + b^k_o$$
#
# then every layer's maps are summed over $D$ and concatenated. **Can model:** vector-wise
# crosses of degree $k + 1$ at layer $k$ (with zero biases). **Cannot:** mix embedding
# coordinates: coordinate $j$ of a map only ever multiplies coordinate $j$ of the fields.

# %%
cin_sizes = [F] * num_layers  # hidden maps per layer (the reference uses F)
cin = CIN(F, cin_sizes).to(dev)


def cin_scratch(v: torch.Tensor) -> torch.Tensor:
    x, pooled = v, []
    for layer in cin.layers:
        W = layer.conv.weight.squeeze(-1).reshape(layer.out_size, x.shape[1], F)  # (O, H, F)
        x = torch.einsum("ohf,bhd,bfd->bod", W, x, v) + layer.conv.bias[:, None]  # (B, O, D)
        pooled.append(x.sum(dim=-1))  # (B, O)
    return torch.cat(pooled, dim=1)  # (B, sum of sizes)


assert same(cin(v), cin_scratch(v))
assert cin(v).shape == (batch_size, sum(cin_sizes)) == (batch_size, cin.output_dim)
with torch.no_grad():
    for layer in cin.layers:
        layer.conv.bias.zero_()
assert degree_in_scale(cin, probe.view(1, F, D)) == num_layers + 1  # the last layer's degree

# %% [markdown]
# No mixing of coordinates, checked: changing coordinate 0 of every field embedding leaves the
# layer's maps at coordinates $1..D-1$ unchanged.

# %%
first = cin.layers[0]
changed = v.clone()
changed[:, :, 0] += 1.0
assert same(first(changed, changed)[:, :, 1:], first(v, v)[:, :, 1:])
assert not same(first(changed, changed)[:, :, 0], first(v, v)[:, :, 0])

# %% [markdown]
# ## 6. FM and inner products: pairwise interactions of field embeddings
#
# The factorisation machine's second-order term sums the inner products of all field pairs:
#
# $$\text{FM}(v) = \sum_{i<j} \langle v_i, v_j \rangle
#   = \tfrac12 \sum_{k=1}^{D} \Big[ \big(\textstyle\sum_f v_{f,k}\big)^2
#     - \textstyle\sum_f v_{f,k}^2 \Big]$$
#
# The right side (square of sum minus sum of squares) costs $O(FD)$ instead of $O(F^2 D)$. IPNN
# keeps the $F(F-1)/2$ inner products separate and feeds them to an MLP. **Can model:** every
# pairwise cross, with $D$ parameters per feature value. **Cannot:** crosses of three or more
# fields, or a pair whose effect is not a low-rank inner product.

# %%
def fm_scratch(v: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(v.shape[0], 1, device=v.device)
    for i in range(F):
        for j in range(i + 1, F):
            total += (v[:, i] * v[:, j]).sum(dim=1, keepdim=True)  # <v_i, v_j>, (B, 1)
    return total


def inner_products_scratch(v: torch.Tensor) -> torch.Tensor:
    return torch.stack([(v[:, i] * v[:, j]).sum(dim=1)
                        for i in range(F) for j in range(i + 1, F)], dim=1)  # (B, P)


inner = InnerProduct(F).to(dev)
assert same(FMInteraction()(v), fm_scratch(v))
assert same(inner(v), inner_products_scratch(v))
assert inner(v).shape == (batch_size, F * (F - 1) // 2)
assert same(FMInteraction()(v), inner(v).sum(dim=1, keepdim=True))  # FM = sum of the pairs

# %% [markdown]
# ## Summary: sizes at a glance
#
# The parameters of each block at this notebook's sizes ($F$ from the data, $D$ from the
# parameters). The embedding table dominates a CTR model; the blocks above it are small.

# %%
# NBVAL_CHECK_OUTPUT
def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


blocks = {
    "embedding": embedding,  # the table: num_features x D
    "mlp": mlp,  # [2d, d] -> 1
    "crossnet_v1": cross,
    "crossnet_v2": cross_v2,
    "cin": cin,  # sizes [F] * num_layers
    "fm": FMInteraction(),
    "inner_product": inner,
}
sizes = pd.DataFrame({"parameters": {name: count(m) for name, m in blocks.items()}})
assert sizes.loc["crossnet_v1", "parameters"] == num_layers * 2 * d
assert sizes.loc["crossnet_v2", "parameters"] == num_layers * (d * d + d)
assert sizes.loc["embedding", "parameters"] == data.num_features * D
assert sizes.loc["fm", "parameters"] == sizes.loc["inner_product", "parameters"] == 0
sizes

# %% [markdown]
# ## Results

# %%
results = {
    "dataset": dataset, "num_fields": F, "embed_dim": D, "flat_width": d,
    "cross_degree": cross_degree, "mlp_bent_steps": kinks,
    **{f"params_{name}": int(n) for name, n in sizes["parameters"].items()},
}
write_results(out, results)

# %% [markdown]
# ## Exercises
#
# 1. Write a low-rank CrossNet v2 layer from scratch (`CrossNetV2(d, L, low_rank=r)`) and
#    assert it equals the library's. How many parameters does it save at Criteo's
#    $d = 39 \times 40$ with $r = 32$?
# 2. With `split_half=True`, CIN sends half of each layer's maps to the output. Extend
#    `cin_scratch` and check it against `CIN(F, sizes, split_half=True)`.
# 3. Fit $y = x_1 x_2$ (Gaussian $x$) from a random start with Adam, once with an MLP and
#    once with a cross layer followed by a linear readout. Which gets lower error, and how does
#    that change with more input coordinates, or a target that is an inner product of two
#    8-dimensional halves of $x$? Run each over several seeds before you conclude.
# 4. Show that a CrossNet v1 layer with $w = 0$ is the identity plus a bias, and that a
#    CrossNet v2 layer with $W = 0, b = 1$ doubles its input. What does that mean for training
#    from a near-zero initialisation?
# 5. Which of the planted structures of notebook 00 (first-order, pairs, a triple through a
#    sine) can FM represent? CrossNet with 2 layers? An MLP?
