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
# # 02 · Fusion baselines: stacked versus parallel
#
# A deep CTR model is a set of *components* (shallow ones such as a CrossNet layer, deep ones
# such as an MLP layer) plus a *fusion design*: which component feeds which, and how several
# inputs are merged. Hand-made models pick one of two designs.
#
# You will learn:
# - what the **stacked** and the **parallel** designs are, drawn as graphs of the same
#   OptFusion fusion graph that the search explores in notebook 03;
# - how the eight hand-made baselines (DNN, IPNN, DeepFM, DCN, xDeepFM, DCN-V2 stacked and
#   parallel, EDCN) fuse their components;
# - how to compare models honestly on small data: several seeds, mean ± standard deviation,
#   error bars, and claims only against chance.

# %%
import json
from pathlib import Path

import pandas as pd
import torch

from optfusion_lab import viz
from optfusion_lab.course import write_results
from optfusion_lab.experiments import (
    baseline_configs,
    design_genotype,
    prepared_data,
    summarize_runs,
    train_baselines,
    train_genotypes,
)
from optfusion_lab.models import build_model
from optfusion_lab.models.genotype import FusionGraph, parallel_edges, stacked_edges
from optfusion_lab.models.supernet import FusionNetwork

# %% tags=["parameters"]
dataset = "criteo"  # criteo, avazu or kdd12: the raw layout, and the embedded sample by default
data_path = ""  # a raw file of that dataset, such as the full Kaggle train.txt; empty: the sample
samples_dir = "../data_samples"  # folder of the embedded samples
output_dir = "../runs/course/02_fusion_baselines"  # everything this notebook writes goes here
models = ["dnn", "ipnn", "deepfm", "dcn", "xdeepfm", "dcnv2-stacked", "dcnv2-parallel", "edcn"]  # baselines
seeds = [0, 1, 2]  # one training run per seed; charts show mean ± std over seeds
preset = "tiny"  # sizes and learning rates: tiny, or the reference preset of the dataset
epochs = 2  # at most this many epochs per run (early stopping may end a run sooner)
embed_dim = 4  # D, the embedding width of every field; blocks work at width F times D
batch_size = 256  # training batch size
device = "cpu"  # cpu, cuda or auto
threads = 1  # torch CPU threads
auc_margin = 0.02  # better than chance means a mean test AUC above 0.5 plus this margin

# %%
torch.set_num_threads(threads)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
data = prepared_data(dataset, out / "data" / dataset, data_path or None, samples_dir)
F, D = data.num_fields, embed_dim
print(f"{dataset}: {sum(data.meta['num_rows'].values()):,} rows, F = {F} fields, "
      f"{data.num_features:,} features; d = F * D = {F * D}")

# %% [markdown]
# ## The fusion graph, and two hand-made designs in it
#
# Every component works at the flat width $d = F \cdot D$. The fusion graph with $L$ layers has
# the nodes $E$ (the flat embedding), $C_0$ (a shallow block on $E$), then per layer
# $i = 1..L$ a shallow block $C_i$ and a deep block $D_i$, and $OUT$, which fuses its inputs
# and applies $\mathrm{Linear}(d, 1)$. Node $C_i$ / $D_i$ may take any node of the layers below
# (and $E$, $C_0$) as input: $2i$ candidates. $OUT$ may take all $2L + 2$ nodes.
#
# With $L = 3$: $1 + 2\cdot2 + 2\cdot4 + 2\cdot6 + 8 = 33$ candidate edges and $2L + 1 = 7$
# fusion nodes (every block but $C_0$, plus $OUT$).

# %%
# NBVAL_CHECK_OUTPUT
graph = FusionGraph(3)
print("nodes:", " ".join(graph.nodes))
L = graph.num_layers
assert len(graph.edges) == 1 + sum(2 * (2 * i) for i in range(1, L + 1)) + (2 * L + 2) == 33
assert len(graph.fusion_nodes) == 2 * L + 1 == 7

# %% [markdown]
# A hand-made design is a choice of edges in this graph:
#
# - **stacked**: the cross chain feeds the deep chain, $E \to C_0 \to D_1 \to D_2 \to D_3 \to OUT$
#   (DCN-V2 stacked is of this kind: explicit crosses first, then the MLP refines them);
# - **parallel**: the cross chain $E \to C_0 \to C_1 \to \dots \to C_L$ beside the deep chain
#   $E \to D_1 \to \dots \to D_L$, both ends concatenated at $OUT$ (DCN, DCN-V2 parallel).

# %%
stacked = design_genotype("stacked", F, D, out_operation="add")
parallel = design_genotype("parallel", F, D, out_operation="concat")
viz.compare_diagrams([stacked, parallel], ["stacked", "parallel"],
                     title="Two hand-made designs in the fusion graph (differences in red)")

# %%
assert set(stacked.live_edges()) == set(stacked_edges(graph))
assert set(parallel.live_edges()) == set(parallel_edges(graph))
assert len(stacked.live_edges()) == L + 2 and len(parallel.live_edges()) == 2 * L + 3
assert parallel.inputs_of("OUT") == (f"C{L}", f"D{L}")  # both chain ends meet at OUT
assert stacked.inputs_of("OUT") == (f"D{L}",)

# %% [markdown]
# Both designs are *models of the fusion graph*: the derived network of each genotype builds
# only its live blocks. The parallel design has a whole cross chain more than the stacked one,
# and a CONCAT at OUT (a $\mathrm{Linear}(2d, d)$).

# %%
sizes = {name: sum(p.numel() for p in FusionNetwork.from_genotype(g, data.num_features, F)
                   .parameters())
         for name, g in [("stacked", stacked), ("parallel", parallel)]}
blocks = {name: FusionNetwork.from_genotype(g, data.num_features, F).blocks.keys()
          for name, g in [("stacked", stacked), ("parallel", parallel)]}
print(sizes, {k: list(v) for k, v in blocks.items()})
assert list(blocks["stacked"]) == ["C0", "D1", "D2", "D3"]
assert list(blocks["parallel"]) == ["C0", "C1", "D1", "C2", "D2", "C3", "D3"]
assert sizes["parallel"] > sizes["stacked"]

# %% [markdown]
# ## The eight baselines
#
# | model | shallow part | deep part | fusion |
# |---|---|---|---|
# | DNN (FNN) | none | MLP on $E$ | – |
# | IPNN | all pairwise inner products $\langle v_i, v_j\rangle$ | MLP | stacked (products feed the MLP) |
# | DeepFM | first-order + FM $\sum_{i<j}\langle v_i, v_j\rangle$ | MLP on $E$ | parallel, ADD of logits |
# | DCN | CrossNet v1: $x_{l+1} = x_0 (w^\top x_l) + b + x_l$ | MLP on $E$ | parallel, CONCAT |
# | xDeepFM | CIN (vector-wise crosses) | MLP on $E$ | parallel, ADD of logits |
# | DCN-V2 stacked | CrossNet v2: $x_{l+1} = x_0 \odot (W x_l + b) + x_l$ | MLP | stacked |
# | DCN-V2 parallel | CrossNet v2 | MLP on $E$ | parallel, CONCAT |
# | EDCN | cross and deep layers side by side, bridged and regulated per layer | | parallel, per-layer |
#
# Their sizes at this notebook's parameters:

# %%
counts = []
for name in models:
    model_cfg, _ = baseline_configs(data, name, preset=preset, embed_dim=embed_dim)
    model = build_model(name, data.num_features, F, model_cfg)
    x = torch.zeros(7, F, dtype=torch.long)
    assert model(x).shape == (7,)  # every baseline maps (B, F) ids to (B,) logits
    counts.append({"model": name, "parameters": sum(p.numel() for p in model.parameters())})
counts = pd.DataFrame(counts)
counts

# %% [markdown]
# ## Training over seeds
#
# One run is not a measurement: on a small sample, two seeds of one model often differ more
# than two models do. Every model is trained once per seed (each seed fixes the initialisation
# and the batch order), with early stopping on validation AUC; we report the test AUC and
# LogLoss at the best validation epoch, as mean ± sample standard deviation over seeds.

# %%
runs = train_baselines(data, models, seeds, preset=preset, embed_dim=embed_dim, epochs=epochs,
                       batch_size=batch_size, device=device, threads=threads)
runs.to_csv(out / "baselines.csv", index=False)
summary = summarize_runs(runs, "model")
summary.round(4)

# %%
viz.results_figure(runs, "test_auc",
                   title=f"Test AUC on {dataset}: mean ± std over {len(seeds)} seed(s), every seed a dot")

# %% [markdown]
# **The claim we can make.** Every model learns something: its mean test AUC is above chance
# (0.5) by at least `auc_margin`. Which baseline is *best* is not asserted: the error bars show
# how far apart the seeds are, and on a sample of a few thousand rows they overlap. Rerun with
# more seeds, more epochs, the reference preset and the full dataset (parameters above) to
# separate them.

# %%
assert len(runs) == len(models) * len(seeds)
for row in summary.itertuples():
    assert row.test_auc_mean > 0.5 + auc_margin, f"{row.model} is not above chance"

# %% [markdown]
# ## Stacked and parallel as fusion-graph models
#
# The same two designs, trained as derived networks of the fusion graph (cross blocks, deep
# blocks of width $d$), over the same seeds. This is the space the search of notebook 03 walks:
# the hand-made designs are two of its points.

# %%
_, train_cfg = baseline_configs(data, "dcn", preset=preset, embed_dim=embed_dim, epochs=epochs,
                                batch_size=batch_size, device=device, threads=threads)
designs = train_genotypes(data, {"stacked": stacked, "parallel": parallel}, seeds, train_cfg)
designs.to_csv(out / "designs.csv", index=False)
design_summary = summarize_runs(designs, "model")
design_summary.round(4)

# %%
both = pd.concat([summary.assign(kind="baseline"), design_summary.assign(kind="fusion graph")])
viz.results_figure(pd.concat([runs, designs]), "test_auc",
                   title="Baselines and the two designs of the fusion graph (mean ± std)")

# %%
for row in design_summary.itertuples():
    assert row.test_auc_mean > 0.5 + auc_margin, f"{row.model} is not above chance"
stacked.save(out / "stacked_genotype.json")
parallel.save(out / "parallel_genotype.json")

# %%
results = {"dataset": dataset, "seeds": len(seeds), "epochs": epochs, "embed_dim": embed_dim}
for row in both.itertuples():
    results[f"{row.model}_test_auc_mean"] = row.test_auc_mean
    results[f"{row.model}_test_auc_std"] = row.test_auc_std
    results[f"{row.model}_test_logloss_mean"] = row.test_logloss_mean
write_results(out, results)
print(json.dumps(results, indent=1)[:400], "...")

# %% [markdown]
# ## Exercises
#
# 1. Raise `seeds` to ten seeds. Which pairs of models now have error bars that do not
#    overlap? Compute the paired difference per seed for DCN versus DNN and its standard error.
# 2. Run the notebook on another dataset (`dataset = "avazu"`) or on a full file (`data_path`,
#    `preset = dataset`). Does the ranking of the baselines carry over?
# 3. Build the design "E → C0 → C1 → OUT and E → D1 → OUT with PROD at OUT" with
#    `Genotype.from_arch` and train it next to the two designs. Where does it land?
# 4. DeepFM and xDeepFM add *logits*, DCN concatenates *hidden vectors*. Which of the four
#    fusion operations (ADD, PROD, CONCAT, ATT) of notebook 03 is each closest to?
