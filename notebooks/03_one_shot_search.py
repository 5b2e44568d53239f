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
# # 03 · The one-shot search: learning connections and operations
#
# OptFusion makes the fusion design learnable. A *supernet* holds every candidate connection of
# the fusion graph, each gated by a parameter $\alpha$, and every candidate fusion operation,
# mixed by a softmax over $\beta$. One training run updates the network weights and
# $\alpha$, $\beta$ together.
#
# You will learn:
# - how many candidate edges and fusion nodes the supernet holds, counted from the graph;
# - the gate $\alpha$ and its straight-through estimator: a hard 0/1 forward with a gradient;
# - the operation weights $\mathrm{softmax}(\beta)$ over ADD, PROD, CONCAT and ATT;
# - how a one-shot search runs, watched live, and what it found on *teacher data*, whose labels
#   come from a known fusion architecture, scored against that truth.

# %%
import json
from pathlib import Path

import numpy as np
import plotly.express as px
import torch

from optfusion_lab import viz
from optfusion_lab.course import write_results
from optfusion_lab.data.teacher import TEACHER_SAMPLE
from optfusion_lab.experiments import (
    prepared_data,
    search_configs,
    search_run,
)
from optfusion_lab.fusion import OPERATIONS, MixedFusion, build_operation, straight_through_gate
from optfusion_lab.models.genotype import Genotype
from optfusion_lab.models.supernet import FusionNetwork
from optfusion_lab.models.teacher import (
    TEACHER_GENOTYPE,
    per_field_auc,
    score_against_chance,
    score_genotype,
    teacher_split_auc,
)
from optfusion_lab.widgets import LiveMonitor, watch

# %% tags=["parameters"]
dataset = "teacher"  # teacher: KDD12 layout with a known fusion; or criteo, avazu, kdd12
data_path = ""  # a raw file of that dataset; empty: the embedded sample in samples_dir
samples_dir = "../data_samples"  # folder of the embedded samples
output_dir = "../runs/course/03_one_shot_search"  # everything this notebook writes goes here
seed = 0  # seeds the supernet, the architecture init and the batch order
preset = "tiny"  # search preset: learning rates, batch size, epochs
epochs = 3  # at most this many epochs; the best validation epoch is kept
embed_dim = 4  # D, the embedding width; every block works at width F times D
num_layers = 3  # L, layers of the fusion graph; the reference uses 3
batch_size = 256  # training batch size
arch_lr = 0.1  # Adam learning rate of alpha and beta
alpha_init = 0.5  # initial alpha of every edge; positive means every edge starts on
history_every = 5  # record alpha and the operation weights every this many steps
device = "cpu"  # cpu, cuda or auto
threads = 1  # torch CPU threads
auc_margin = 0.02  # better than chance means a test AUC above 0.5 plus this margin

# %%
torch.set_num_threads(threads)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
data = prepared_data(dataset, out / "data" / dataset, data_path or None, samples_dir)
F = data.num_fields
supernet_cfg, train_cfg, search_cfg = search_configs(
    preset=preset, embed_dim=embed_dim, num_layers=num_layers, alpha_init=alpha_init,
    arch_lr=arch_lr, epochs=epochs, batch_size=batch_size, history_every=history_every,
    seed=seed, device=device, threads=threads)
print(supernet_cfg, train_cfg, search_cfg, sep="\n")

# %% [markdown]
# ## The supernet: every candidate edge and every operation
#
# Layer $i$'s blocks $C_i$, $D_i$ each have $2i$ candidate inputs ($E$, $C_0$ and the blocks of
# the layers below); $C_0$ has the single input $E$; $OUT$ has all $2L + 2$ nodes. So there are
#
# $$1 + \sum_{i=1}^{L} 2 \cdot 2i + (2L + 2) = 2L^2 + 4L + 3$$
#
# candidate edges (33 for $L = 3$), each with one $\alpha$, and $2L + 1$ fusion nodes, each
# with one row of $\beta$ (one logit per operation).

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(seed)
net = FusionNetwork(data.num_features, F, supernet_cfg)
L = num_layers
alpha, beta = net.alpha, net.beta
print(f"alpha {tuple(alpha.shape)}, beta {tuple(beta.shape)}")
assert alpha.shape == (2 * L * L + 4 * L + 3,) == (len(net.graph.edges),)
assert beta.shape == (2 * L + 1, len(OPERATIONS))

# %% [markdown]
# The architecture parameters ($\alpha$, $\beta$) and the weights (embeddings, blocks, operation
# layers, output) are two disjoint sets that together make up every parameter of the network;
# each gets its own optimizer.

# %%
arch = {id(p) for p in net.arch_parameters()}
weights = {id(p) for p in net.weight_parameters()}
assert arch.isdisjoint(weights) and arch | weights == {id(p) for p in net.parameters()}
print(f"{sum(p.numel() for p in net.arch_parameters())} architecture parameters, "
      f"{sum(p.numel() for p in net.weight_parameters()):,} weights")

# %% [markdown]
# ## The gate: a straight-through estimator of $\alpha$
#
# Edge $j$ is on when $\alpha_j > 0$. The forward pass uses the hard gate
# $g_j = \mathbf{1}[\alpha_j > 0]$, exactly 0 or 1, so the network computes with exactly the
# edges that are on. But $\mathbf{1}[\alpha > 0]$ has zero gradient almost everywhere, so the
# backward pass pretends the gate was the identity: $\partial g_j / \partial \alpha_j := 1$.
# An edge that is off still receives a gradient and can switch back on.

# %%
# NBVAL_CHECK_OUTPUT
a = torch.tensor([-0.3, 0.2, 0.5, -1.0], requires_grad=True)
g = straight_through_gate(a)
upstream = torch.tensor([0.7, -0.1, 0.4, -2.0])
(g * upstream).sum().backward()
print("gates", g.tolist(), " d/dalpha", a.grad.tolist())
assert g.tolist() == [0.0, 1.0, 1.0, 0.0]
assert torch.equal(a.grad, upstream)  # identity backward, even for the edges that are off

# %% [markdown]
# ## The operations and their mixture
#
# A fusion node with gated inputs $g_1 x_1, \dots, g_k x_k$ computes each candidate operation
#
# - ADD: $\sum_j g_j x_j$
# - PROD: $\prod_j (g_j x_j + 1 - g_j)$, the product over the *active* inputs only
# - CONCAT: $\mathrm{Linear}(k d \to d)([g_1 x_1, \dots, g_k x_k])$
# - ATT: $\sum_j a_j(g_j x_j) \odot g_j x_j$, with a small softmax attention net $a_j$ per input
#
# and, during the search, mixes them: $\sum_o \mathrm{softmax}(\beta)_o \, \mathrm{op}_o$.
# Below, the library's mixed node against that sum written out.

# %%
torch.manual_seed(1)
k, B, d = 3, 7, 8
x = torch.randn(k, B, d)
gates = torch.tensor([1.0, 0.0, 1.0])
beta_row = torch.randn(len(OPERATIONS))
mixed = MixedFusion(k, d)
by_hand = sum(w * mixed.ops[name](x, gates)
              for w, name in zip(torch.softmax(beta_row, -1), OPERATIONS, strict=True))
assert torch.allclose(mixed(x, gates, torch.softmax(beta_row, -1)), by_hand, atol=1e-6)
prod = build_operation("prod", k, d)
assert torch.allclose(prod(x, gates), x[0] * x[2])  # the inactive input does not zero it
assert torch.allclose(build_operation("add", k, d)(x, gates), x[0] + x[2])

# %% [markdown]
# ## The search
#
# One-shot and single-level: every training batch gives one loss and one backward pass; then
# the weight optimizer (Adam) *and* the architecture optimizer (Adam over $\alpha$, $\beta$ with
# learning rate `arch_lr`) both step. After every epoch the supernet is validated; the weights,
# $\alpha$ and $\beta$ of the best validation epoch are kept, and the search stops at the first
# epoch without improvement.
#
# The listener below is called with every new snapshot of $\alpha$ and the operation weights;
# here it prints a line per epoch while the search runs.
#
# The search runs under a `LiveMonitor`: in JupyterLab its cell returns at once and the search
# goes on in the background, with $\alpha$, the operation weights, the loss and the validation
# AUC plotted as they move, and a **Stop** button. Stop ends the search after its current step
# and keeps the best epoch so far (stop after the first epoch, so there is one); the next cell
# waits for the search and gets that result. Headless (Papermill, `make run`) the same cell
# blocks until the search ends and then draws the same plots once, as static figures.

# %%
def monitor(snapshot):
    if snapshot["when"].iloc[0] == "epoch":
        alphas = snapshot[snapshot["kind"] == "alpha"]["value"]
        print(f"  epoch {snapshot['epoch'].iloc[0]}, step {snapshot['step'].iloc[0]}: "
              f"{int((alphas > 0).sum())} of {len(alphas)} edges on")


searching = LiveMonitor(every=5).start(search_run, out / "search", data, supernet_cfg, train_cfg,
                                       search_cfg, listeners=[monitor])

# %%
run = searching.result()  # waits for the search; after Stop, the best state so far
print("reused an earlier run" if run.reused else "searched", "->", run.directory)
run.epochs

# %% [markdown]
# A search started elsewhere (the command line on a GPU machine, another kernel) writes
# `epochs.csv` and `history.csv` into its folder after every epoch and `result.json` at the
# end. `watch(folder)` follows such a folder with the same plots; here it reads the folder this
# search wrote. In JupyterLab it keeps following in the background until the run ends; headless
# it draws the folder's current state once. To set up a search with widgets instead of this
# parameters cell, try `optfusion_lab.widgets.Playground()` in JupyterLab.

# %%
watcher = watch(run.directory)
assert watcher.done  # result.json is there: the run has ended

# %% [markdown]
# ### How $\alpha$ moved
#
# One line per candidate edge, one panel per node it feeds. A line that crosses the dashed
# zero line (marked with an x) is an edge switching on or off.

# %%
viz.alpha_evolution(run.history, title="alpha per edge during the search (on while alpha > 0)")

# %% [markdown]
# ### How the operation weights moved
#
# A star marks the operation each node ends with.

# %%
viz.operation_weights_evolution(run.history, title="softmax(beta) per fusion node during the search")

# %%
alphas = run.history[run.history["kind"] == "alpha"].copy()
alphas["edge"] = alphas["input"] + "→" + alphas["node"]
ops = run.history[run.history["kind"] == "weight"]
assert len(alphas["edge"].unique()) == len(net.graph.edges)
assert set(ops["node"]) == set(net.graph.fusion_nodes)
final = ops[ops["step"] == ops["step"].max()].groupby("node")["value"].sum()
assert np.allclose(final, 1.0)  # the operation weights of a node always sum to one

# %% [markdown]
# ## What the search found
#
# The *genotype* is the derived architecture: the edges with $\alpha > 0$, and per node the
# operation with the largest weight. Inputs in parentheses are active but pruned: they do not
# carry signal from $E$ to $OUT$.

# %%
found = run.genotype
print(found)
assert found == Genotype.from_dict(json.loads((run.directory / "genotype.json").read_text()))
assert found.live_edges()  # OUT has at least one live input

# %%
viz.fusion_diagram(found, title=f"The fusion graph found on {dataset}")

# %%
# The final phase's best epoch; after Stop, the best epoch before it (the seed summary
# covers finished searches only).
supernet_auc = run.result["phases"][-1]["test_auc"]
if run.result["stopped"]:
    print(f"stopped ({run.result['stop_reason']}): what follows reads the best state so far")
assert supernet_auc is not None, "stopped before one epoch ended: run the search cell again"
print(f"supernet test AUC at its best epoch: {supernet_auc:.4f}")
assert supernet_auc > 0.5 + auc_margin

# %% [markdown]
# ### Against the truth (teacher data only)
#
# The teacher sample's labels were drawn from the derived model of a stated genotype with random
# weights. The score compares *live* edges (agreement over all 33 candidates, precision,
# recall, and the recall under the best renaming of the layers: C2 with C1's inputs is the same
# model as C1) and the operation of each node live in both. To read it we need a chance level:
# for the edges, random wirings with as many live edges as the found one; for the operations,
# the found edges with a random operation per node. Two AUCs frame the supernet's: the
# teacher's own (the ceiling) and a per-field logistic regression's (the floor: what a model
# that learns no interaction between fields reaches). A search at the floor has learned
# nothing its fusion could be credited with.

# %%
results = {"dataset": dataset, "seed": seed, "epochs": epochs, "embed_dim": embed_dim,
           "supernet_test_auc": supernet_auc, "live_edges": len(found.live_edges()),
           "search_seconds": run.result["search_seconds"]}
teacher = dataset == "teacher" and not data_path and num_layers == TEACHER_GENOTYPE.num_layers
if teacher:
    print("truth\n", TEACHER_GENOTYPE, sep="")
    score = score_genotype(found)
    against = score_against_chance(found)  # 1,000 chance draws per metric
    chance = {metric: s["chance_mean"] for metric, s in against.items()}
    _, rows, sample_seed = TEACHER_SAMPLE  # the embedded teacher file's rows and seed
    ceiling = teacher_split_auc(data.meta, data.arrays("test"), rows=rows, seed=sample_seed)
    floor = per_field_auc(data, "test")
    for metric, s in against.items():
        print(f"{metric:20s} found {s['found']:.3f}  chance mean {s['chance_mean']:.3f}  "
              f"p95 {s['chance_p95']:.3f}  beats {s['beats']:.0%}")
    print(f"test AUC: teacher (ceiling) {ceiling:.4f}, supernet {supernet_auc:.4f}, "
          f"per-field model (floor) {floor:.4f}")
    results.update({f"score_{k}": v for k, v in score.to_dict().items()})
    results.update({f"chance_{k}": v for k, v in chance.items()})
    results.update({"teacher_test_auc": ceiling, "per_field_test_auc": floor})

# %%
if teacher:
    frame = [{"score": k, "value": v, "who": "found"} for k, v in score.to_dict().items()]
    frame += [{"score": k, "value": v, "who": "chance (mean)"} for k, v in chance.items()]
    frame += [{"score": k, "value": s["chance_p95"], "who": "chance (95th percentile)"}
              for k, s in against.items()]
    fig = px.bar(frame, x="score", y="value", color="who", barmode="group",
                 title="The found genotype against the teacher's, next to chance")
    fig.show()

# %% [markdown]
# What to expect (README, "What the teacher can show", measured over seeds): at this budget the
# supernet reaches about the per-field floor, the operations beat chance, the edges do not. The
# edges cannot: an edge the weights ignore costs the loss nothing, a renamed wiring is the same
# model, and a 3-edge chain of deep blocks fits the teacher as well as its own 8 edges. Notebook
# 05's exercises vary what moves each part: the budget, the teacher's signal, the price on edges.

# %% [markdown]
# The two fusion graphs one under the other; what differs (edges live in one only, nodes with another
# operation) is drawn in red.

# %%
if teacher:
    viz.compare_diagrams([found, TEACHER_GENOTYPE], ["found", "teacher"],
                         title="The found fusion graph beside the teacher's").show()

# %% [markdown]
# One search is one draw: the score above comes from one seed on a small sample, and no claim
# is made that it beats chance. Notebook 05 repeats the search over seeds and shows how stable
# the found edges are.

# %%
write_results(out, results)
print(json.dumps(results, indent=1))

# %% [markdown]
# ## Exercises
#
# 1. Set `alpha_init = -0.1` (every edge starts *off*). Does the search still switch edges on?
#    Which part of the straight-through estimator makes that possible?
# 2. Raise `arch_lr` to 1.0, then lower it to 0.01. How do the $\alpha$ curves change, and how
#    many edges end up live?
# 3. Count the parameters of each operation in one fusion node with $k$ inputs at width $d$:
#    which operation dominates the supernet, and how does it grow with $d$?
# 4. Run the search on `dataset = "criteo"`. What does the found genotype look like on data
#    whose planted structure is pairwise crosses rather than a fusion graph?
