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
# # 07 · What a search costs
#
# A one-shot search trains one supernet once. How much more is that than training one DCN?
#
# You will learn:
# - the measured cost of one search step next to one DCN training step, as a ratio;
# - what dominates it: which operations, and which parameters;
# - how the cost grows with the number of layers $L$ and the width $d = F \cdot D$;
# - what the supernet weighs at the reference Criteo sizes.
#
# Every figure comes from one library function, `optfusion_lab.cost.search_cost` (and its
# parts), which the benchmarks use too. Timings on a shared CPU are noisy: compare figures
# within one run of this notebook only; nothing about speed is asserted.

# %%
import dataclasses
import json
from pathlib import Path

import pandas as pd
import plotly.express as px
import torch

from optfusion_lab.cost import reference_dcn_config, search_cost, supernet_parameters
from optfusion_lab.course import write_results
from optfusion_lab.experiments import prepared_data, search_configs
from optfusion_lab.models import build_model

# %% tags=["parameters"]
dataset = "criteo"  # criteo, avazu, kdd12 or teacher: the data the steps train on
data_path = ""  # a raw file of that dataset; empty: the embedded sample in samples_dir
samples_dir = "../data_samples"  # folder of the embedded samples
output_dir = "../runs/course/07_search_cost"  # everything this notebook writes goes here
embed_dim = 4  # D of the main comparison; every block works at width F times D
num_layers = 3  # L of the main comparison
batch_size = 256  # training batch size of every timed step
warmup = 2  # unmeasured steps before timing
steps = 8  # timed steps per measurement
layer_grid = [1, 2, 3, 4]  # numbers of layers L to measure
width_grid = [2, 4, 8]  # embedding widths D to measure
reference_features = 6_800_000  # features of full Criteo after threshold 2, for the counts
reference_embed_dim = 40  # D of the reference Criteo preset
device = "cpu"  # cpu, cuda or auto
threads = 1  # torch CPU threads

# %%
torch.set_num_threads(threads)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
data = prepared_data(dataset, out / "data" / dataset, data_path or None, samples_dir)
F = data.num_fields
supernet_cfg = search_configs(embed_dim=embed_dim, num_layers=num_layers)[0]
timing = {"batch_size": batch_size, "warmup": warmup, "steps": steps, "device": device}
print(f"F = {F}, D = {embed_dim}, d = {F * embed_dim}, L = {num_layers}")

# %% [markdown]
# ## One search step next to one DCN step
#
# A search step is the one-shot step: forward through every candidate edge and every operation
# of every node, one backward, then both optimizers step. The DCN is the reference shape at
# the same width: three CrossNet-v1 layers beside an MLP of three layers of width $d$.

# %%
cost = search_cost(data, supernet_cfg, **timing)
main = pd.Series(cost.to_dict())
main

# %%
print(f"one search step costs {cost.step_ratio:.1f} DCN steps; the supernet has "
      f"{cost.parameter_ratio:.1f} times the DCN's parameters")
assert cost.supernet_parameters == sum(cost.parts.values())
dcn = build_model("dcn", data.num_features, F, reference_dcn_config(F, embed_dim))
assert cost.dcn_parameters == sum(p.numel() for p in dcn.parameters())
assert cost.supernet_parameters > cost.dcn_parameters

# %% [markdown]
# ## Which parameters dominate
#
# Node $n$ with $k_n$ candidate inputs holds a CONCAT layer $\mathrm{Linear}(k_n d \to d)$
# ($k_n d^2 + d$ parameters) and one attention net per input for ATT ($2d^2 + d$ each: a
# $\mathrm{Linear}(d, d)$ with bias and one without). Summed over the fusion nodes,
# $\sum_n k_n = E - 1$ (every edge but $E \to C_0$), so
#
# $$\text{CONCAT} = (E - 1) d^2 + (2L + 1) d, \qquad \text{ATT} = (E - 1)(2d^2 + d),$$
#
# with $E = 2L^2 + 4L + 3$ candidate edges: ATT alone outweighs everything but the embedding.

# %%
d, L = F * embed_dim, num_layers
edges = 2 * L * L + 4 * L + 3
parts = pd.Series(cost.parts, name="parameters")
assert parts["concat"] == (edges - 1) * d * d + (2 * L + 1) * d
assert parts["att"] == (edges - 1) * (2 * d * d + d)
assert parts["add"] == parts["prod"] == 0
assert parts["architecture"] == edges + (2 * L + 1) * len(supernet_cfg.operations)
fig = px.bar(parts.reset_index(), x="index", y="parameters", log_y=True,
             labels={"index": "part"}, title=f"Supernet parameters by part (D = {embed_dim})")
fig.show()

# %% [markdown]
# ## Which operations dominate the time
#
# The same supernet with a single candidate operation, one at a time, then all four. ADD and
# PROD have no parameters; CONCAT and ATT carry the matrix products.

# %%
rows = []
for ops in [("add",), ("prod",), ("concat",), ("att",), supernet_cfg.operations]:
    c = search_cost(data, dataclasses.replace(supernet_cfg, operations=ops), **timing)
    rows.append({"operations": "+".join(ops), "step_ratio": c.step_ratio,
                 "supernet_step_seconds": c.supernet_step_seconds,
                 "supernet_parameters": c.supernet_parameters})
by_operation = pd.DataFrame(rows)
fig = px.bar(by_operation, x="operations", y="step_ratio",
             title="Search step time in DCN steps, by candidate operations")
fig.show()
by_operation

# %% [markdown]
# ## How the cost grows with layers and width
#
# The number of candidate edges grows as $2L^2$, and every parameter-heavy operation as $d^2$:
# doubling the width roughly quadruples the fusion parameters.

# %%
rows = []
for layers in layer_grid:
    c = search_cost(data, dataclasses.replace(supernet_cfg, num_layers=layers), **timing)
    rows.append({"grid": "layers L", "value": layers, **c.to_dict()})
for width in width_grid:
    c = search_cost(data, dataclasses.replace(supernet_cfg, embed_dim=width), **timing)
    rows.append({"grid": "embedding D", "value": width, **c.to_dict()})
growth = pd.DataFrame(rows)
growth.to_csv(out / "growth.csv", index=False)
fig = px.line(growth, x="value", y="step_ratio", facet_col="grid", markers=True,
              title="Search step time in DCN steps", labels={"value": ""})
fig.update_xaxes(matches=None)
fig.show()
fig = px.line(growth, x="value", y="supernet_parameters", facet_col="grid", markers=True,
              log_y=True, title="Supernet parameters", labels={"value": ""})
fig.update_xaxes(matches=None)
fig.show()

# %%
by_layers = growth[growth["grid"] == "layers L"].sort_values("value")
assert by_layers["supernet_parameters"].is_monotonic_increasing
by_width = growth[growth["grid"] == "embedding D"].sort_values("value")
assert by_width["parameters_att"].is_monotonic_increasing

# %% [markdown]
# ## At the reference Criteo sizes
#
# Counted on PyTorch's `meta` device, so nothing is allocated: $F = 39$, $D = 40$,
# $d = 1560$, about 6.8 million features after the threshold.

# %%
# NBVAL_CHECK_OUTPUT
reference = supernet_parameters(reference_features, 39, dataclasses.replace(
    supernet_cfg, embed_dim=reference_embed_dim))
reference = pd.Series(reference, name="parameters")
share = (reference / reference.sum()).rename("share")
pd.concat([reference, share.round(4)], axis=1)

# %%
network = reference.drop(["embedding"])
assert network.idxmax() == "att"  # ATT dominates everything but the embedding table
print(f"ATT: {reference['att']:,} parameters, {reference['att'] / network.sum():.0%} of the "
      f"non-embedding supernet")

# %%
results = {"dataset": dataset, "embed_dim": embed_dim, "num_layers": num_layers,
           "batch_size": batch_size, "step_ratio": cost.step_ratio,
           "parameter_ratio": cost.parameter_ratio,
           "supernet_parameters": cost.supernet_parameters,
           "dcn_parameters": cost.dcn_parameters,
           "reference_att_parameters": int(reference["att"]),
           "reference_total_parameters": int(reference.sum())}
for row in by_operation.itertuples():
    results[f"step_ratio_{row.operations}"] = row.step_ratio
write_results(out, results)
print(json.dumps(results, indent=1))

# %% [markdown]
# ## Exercises
#
# 1. The ratio is per step. A search runs up to 5 epochs with early stopping, and a DCN too:
#    estimate the whole search in DCN trainings, then measure it with `search` and `fit`.
# 2. `att-lite` replaces each attention net by a rank-32 bottleneck. Add it to the operations
#    above: what does it save at $d = 1560$?
# 3. Run with `device = "cuda"` on a GPU. Does the ratio stay the same? Why might it not?
# 4. The sequential search runs two phases. What does it cost next to the one-shot search?
