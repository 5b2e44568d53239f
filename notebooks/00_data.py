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
# # 00 · The data: raw CTR logs to one global id space
#
# A click-through-rate (CTR) model reads a row of categorical *fields* (site, ad, user, hour,
# ...) and predicts the probability of a click. Before any model sees a row, the raw log is
# turned into integer ids. This notebook walks through that step for the three datasets of the
# OptFusion paper, with the reference preprocessing, on the small samples embedded in the
# project.
#
# You will learn:
#
# 1. the raw layouts of Criteo, Avazu and KDD Cup 2012 (track 2), and which columns become fields;
# 2. the reference Criteo integer transform `floor(ln(v)^2)` and the token collisions it causes;
# 3. thresholds and out-of-vocabulary (OOV) ids, and the one global id space shared by all
#    fields (one embedding table);
# 4. cardinalities and label balance, as plots;
# 5. what the embedded samples are: synthetic rows with a *planted* click model, and a teacher
#    file whose labels come from a known fusion architecture;
# 6. how to point the course at the full files.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
from IPython.display import display
from sklearn.metrics import roc_auc_score

from optfusion_lab.course import write_results
from optfusion_lab.data import PrepareConfig, get_schema, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.synthetic import PLANTED, SAMPLES, generate
from optfusion_lab.data.teacher import TEACHER_GENOTYPE_FILE, TEACHER_SAMPLE, TEACHER_VOCAB
from optfusion_lab.data.transforms import criteo_integer_tokens
from optfusion_lab.models.genotype import Genotype
from optfusion_lab.models.teacher import TEACHER_GENOTYPE

# %% tags=["parameters"]
samples_dir = "../data_samples"  # folder of the embedded samples (relative to notebooks/)
criteo_file = None  # a raw Criteo file (train.txt, plain or .gz); None: the embedded sample
avazu_file = None  # a raw Avazu file (train.csv, plain or .gz); None: the embedded sample
kdd12_file = None  # a raw KDD12 track 2 file (training.txt, plain or .gz); None: the sample
threshold = 2  # tokens seen fewer times map to their field's out-of-vocabulary id
seed = 42  # seed of the random 8:1:1 train/valid/test split
show_rows = 3  # raw rows shown per dataset
output_dir = "../runs/course/00_data"  # this notebook's output folder

# %%
samples = Path(samples_dir)
out = Path(output_dir)
given = {"criteo": criteo_file, "avazu": avazu_file, "kdd12": kdd12_file}
raw_files = {ds: Path(given[ds]) if given[ds] else samples / name
             for ds, (name, _, _) in SAMPLES.items()}
embedded = {ds: not given[ds] for ds in raw_files}
for ds, path in raw_files.items():
    assert path.is_file(), f"{ds}: no file {path}"
raw_files

# %% [markdown]
# ## 1. Raw layouts
#
# | dataset | file | layout | label | fields |
# |---|---|---|---|---|
# | Criteo (Kaggle display ads) | `train.txt` | TAB, no header | `label` | 13 integer counts `I1..I13`, 26 hashed categoricals `C1..C26` |
# | Avazu (Kaggle CTR) | `train.csv` | CSV with header | `click` | `hour` (YYMMDDHH) becomes hour of day, plus derived `weekday`, `is_weekend`; `id` is dropped |
# | KDD Cup 2012 track 2 | `training.txt` | TAB, no header | `Click > 0` | `Impression` and 10 IDs (the reference keeps `Impression`) |
#
# The first rows of each file, read as plain strings (KDD12's `DisplayURL` exceeds the int64
# range, so ids are never parsed as numbers):

# %%
def head(dataset: str, rows: int) -> pd.DataFrame:
    schema = get_schema(dataset)
    return pd.read_csv(raw_files[dataset], sep=schema.delimiter, nrows=rows, dtype=str,
                       header=0 if schema.has_header else None,
                       names=None if schema.has_header else list(schema.raw_columns))


for ds in raw_files:
    display(head(ds, show_rows))

# %% [markdown]
# Each schema lists the raw columns and the model fields derived from them:

# %%
# NBVAL_CHECK_OUTPUT
layouts = pd.DataFrame([
    {"dataset": ds, "raw columns": len(s.raw_columns), "label": s.label_column,
     "fields": s.num_fields, "never thresholded": len(s.unthresholded_fields)}
    for ds, s in ((ds, get_schema(ds)) for ds in raw_files)
])
assert layouts["fields"].tolist() == [39, 24, 11]
layouts

# %% [markdown]
# ## 2. The Criteo integer transform and its collisions
#
# The reference code turns an integer count $v$ into a categorical token
#
# $$\text{token}(v) = \begin{cases} \lfloor \ln(v)^2 \rfloor & v > 2 \\ v & \text{otherwise} \end{cases}$$
#
# and a missing value into a token of its own. Large counts are bucketed on a log scale, which is
# the intent. A side effect: small values collide, because $\lfloor\ln(3)^2\rfloor =
# \lfloor 1.21 \rfloor = 1$, $\lfloor\ln(4)^2\rfloor = 1$ and $\lfloor\ln(5)^2\rfloor = 2$. We
# keep the reference tokens on purpose (results stay comparable) and show the collisions here.

# %%
# NBVAL_CHECK_OUTPUT
values = np.array([np.nan, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 10, 20, 100, 1000, 1e6])
tokens = criteo_integer_tokens(values).to_pylist()
transform = pd.DataFrame({"v": values, "token": pd.array(tokens, dtype="Int64")})
assert tokens[4] == tokens[6] == tokens[7] == 1  # v = 1, 3, 4
assert tokens[5] == tokens[8] == 2  # v = 2, 5
transform.T

# %% [markdown]
# The same transform on the numbers of the Criteo file: how many distinct raw values each
# integer field has, and how many tokens remain. Values that collide lose their identity before
# any model sees them.

# %%
criteo_raw = pd.read_csv(raw_files["criteo"], sep="\t", header=None, dtype=str,
                         names=list(get_schema("criteo").raw_columns))
ints = [f"I{i}" for i in range(1, 14)]
merged = pd.DataFrame([
    {"field": f,
     "raw values": criteo_raw[f].nunique(dropna=False),
     "tokens": pd.Series(criteo_integer_tokens(
         pd.to_numeric(criteo_raw[f]).to_numpy(float)).to_pylist()).nunique(dropna=False)}
    for f in ints
])
assert (merged["tokens"] <= merged["raw values"]).all()
px.bar(merged.melt(id_vars="field", var_name="kind", value_name="distinct"), x="field",
       y="distinct", color="kind", barmode="group",
       title="Criteo integer fields: distinct raw values vs tokens after floor(ln(v)^2)")

# %% [markdown]
# ## 3. Thresholds, OOV ids and one global id space
#
# `prepare` streams a raw file once and writes memory-mappable arrays:
#
# - per field, tokens seen fewer than `threshold` times (default 2) become the field's
#   **out-of-vocabulary id 0**; Criteo's integer fields are never thresholded;
# - field ids are shifted into **one global id space**, `global = offset[field] + id`, with
#   `offset` the running sum of the cardinalities, so one embedding table serves every field;
# - rows are split 8:1:1 (train/valid/test) by a seeded permutation.
#
# As in the reference, counts are taken over the whole file before the split (a mild leak of
# token frequencies, not of labels).

# %%
prepared = {}
for ds, path in raw_files.items():
    prepare(path, out / "data" / ds, PrepareConfig(ds, threshold=threshold, seed=seed))
    prepared[ds] = PreparedData.open(out / "data" / ds)

# %%
# NBVAL_CHECK_OUTPUT
summary = pd.DataFrame([
    {"dataset": ds, "fields": d.num_fields, "features": d.num_features,
     **{f"{s} rows": d.meta["num_rows"][s] for s in d.meta["splits"]},
     "click rate": round(sum(d.meta["num_positive"].values())
                         / sum(d.meta["num_rows"].values()), 4)}
    for ds, d in prepared.items()
]).set_index("dataset")
summary

# %% [markdown]
# The global id space, checked: offsets are the running sums of the cardinalities, and every id
# of field $f$ lies in $[\text{offset}_f, \text{offset}_f + \text{cardinality}_f)$.

# %%
for ds, d in prepared.items():
    cards, offsets = np.array(d.meta["cardinalities"]), np.array(d.meta["offsets"])
    assert (offsets == np.concatenate([[0], np.cumsum(cards)[:-1]])).all()
    assert cards.sum() == d.num_features
    for split in d.meta["splits"]:
        x, y = d.arrays(split)
        assert x.shape == (d.meta["num_rows"][split], d.num_fields)
        assert ((x >= offsets) & (x < offsets + cards)).all(), (ds, split)
        assert set(np.unique(y)) <= {0.0, 1.0}
print("every id lies in its field's range of the one shared table")

# %% [markdown]
# **Cardinalities** (ids per field, OOV included) span orders of magnitude: a handful for
# `banner_pos` or `Depth`, thousands for the ID fields. The share of a field's training rows that
# land on the OOV id shows what the threshold removes: the rare tail.

# %%
rows = []
for ds, d in prepared.items():
    x, _ = d.arrays("train")
    oov = (np.asarray(x) == np.array(d.meta["offsets"])).mean(axis=0)
    rows += [{"dataset": ds, "field": f, "cardinality": c, "OOV share": o}
             for f, c, o in zip(d.field_names, d.meta["cardinalities"], oov, strict=True)]
fields = pd.DataFrame(rows)
figure = px.bar(fields, x="field", y="cardinality", facet_row="dataset", log_y=True,
                hover_data=["OOV share"], height=750, title="Cardinality per field (log scale)")
figure.update_xaxes(matches=None, showticklabels=True)
figure

# %%
px.bar(fields, x="field", y="OOV share", facet_row="dataset", height=750,
       title=f"Share of training rows on the OOV id (threshold {threshold})"
       ).update_xaxes(matches=None, showticklabels=True)

# %% [markdown]
# What the threshold buys: preparing Criteo again with threshold 1 (every token kept) gives
# larger vocabularies for the categorical fields and identical ones for the integer fields.

# %%
criteo_all = prepare(raw_files["criteo"], out / "data" / "criteo-threshold1",
                     PrepareConfig("criteo", threshold=1, seed=seed))
kept, every = prepared["criteo"].meta["cardinalities"], criteo_all["cardinalities"]
assert all(a <= b for a, b in zip(kept, every, strict=True))
assert kept[:13] == every[:13]  # integer fields are never thresholded
print(f"features: {sum(kept):,} with threshold {threshold}, {sum(every):,} with threshold 1")

# %% [markdown]
# **Label balance.** Clicks are the minority class in CTR data, which is why the course reports
# AUC and LogLoss rather than accuracy. A random split keeps the click rate nearly equal across
# train, valid and test:

# %%
balance = pd.DataFrame([
    {"dataset": ds, "split": s, "click rate": d.meta["num_positive"][s] / d.meta["num_rows"][s]}
    for ds, d in prepared.items() for s in d.meta["splits"]
])
px.bar(balance, x="dataset", y="click rate", color="split", barmode="group",
       title="Click rate per split")

# %% [markdown]
# ## 4. The embedded samples and their planted structure
#
# The files in `data_samples/` are **synthetic**: the real Criteo and Avazu logs may not be
# redistributed. The project's generator draws every column from a Zipf law (a few popular
# values, a long tail) and the label from a stated click model:
#
# $$\text{logit} = b + \sum_{c \in \text{first order}} w_c[k_c]
#   + \sum_{(a,b) \in \text{crosses}} \langle u_a[k_a], u_b[k_b] \rangle
#   + \sin\big(\pi (s_x[k_x] + s_y[k_y] + s_z[k_z])\big)$$
#
# so some columns matter alone, some only in pairs (what FM and cross layers model), one triple
# only through a nonlinearity (what an MLP can model), and the rest are noise.

# %%
# NBVAL_CHECK_OUTPUT
planted = pd.DataFrame([
    {"dataset": ds, "first order": ", ".join(p.first_order),
     "crossed pairs": ", ".join(f"{a}×{b}" for a, b in p.crosses),
     "nonlinear triple": ", ".join(p.nonlinear)}
    for ds, p in PLANTED.items()
]).set_index("dataset")
planted

# %% [markdown]
# The generator is deterministic: with the sample's row count and seed it reproduces the file's
# labels exactly, together with the *true* logit of every row. The AUC of the true logit is the
# best any model can reach on average (the labels are Bernoulli draws): a ceiling to compare
# trained models with.

# %%
ceilings = {}
for ds, (_, rows_in_file, sample_seed) in SAMPLES.items():
    if not embedded[ds]:
        continue  # a full file given: no planted truth
    truth = generate(ds, rows_in_file, sample_seed)
    raw_labels = pd.read_csv(raw_files[ds], sep=get_schema(ds).delimiter, dtype=str,
                             usecols=[1 if ds == "avazu" else 0],
                             header=0 if ds == "avazu" else None).iloc[:, 0]
    assert ((raw_labels.astype(int) > 0).to_numpy() == truth.labels.astype(bool)).all()
    ceilings[ds] = roc_auc_score(truth.labels, truth.logits)
    assert ceilings[ds] > 0.6  # far above chance (0.5): the planted structure is learnable
pd.Series(ceilings, name="AUC of the true logit").round(4)

# %% [markdown]
# **The teacher file.** `teacher_kdd12.tsv.gz` is in KDD12's layout, but its labels come from a
# *fusion architecture*: a small network whose connections and fusion operations are stated in
# `teacher_genotype.json`. Later notebooks search for a fusion on this file and score what they
# find against this truth. Each line is a node with its live inputs and its fusion operation
# (with the softmax(beta) weights the file stores); nodes of layer 3 have no live input, so the
# teacher does not use them.

# %%
# NBVAL_CHECK_OUTPUT
teacher = Genotype.load(samples / TEACHER_GENOTYPE_FILE)
assert teacher == TEACHER_GENOTYPE
print(teacher)

# %% [markdown]
# Every teacher column has a small vocabulary, small enough that each value is seen many times:
# after preparation, no value falls under the threshold, so the ids are a relabelling of the
# teacher's own inputs and the teacher is exactly representable by the models of the course.

# %%
teacher_data = out / "data" / "teacher"
teacher_meta = prepare(samples / TEACHER_SAMPLE[0], teacher_data,
                       PrepareConfig("kdd12", threshold=threshold, seed=seed))
assert teacher_meta["cardinalities"] == [v + 1 for v in TEACHER_VOCAB]  # + 1: the OOV id
print(f"teacher: {teacher_meta['num_features']} features, cardinalities "
      f"{teacher_meta['cardinalities']}")

# %% [markdown]
# ## 5. Running the course on the full datasets
#
# Download the files yourself (their terms forbid redistribution): Criteo's Kaggle
# display-advertising `train.txt` (45.8M rows), Avazu's Kaggle `train` (40.4M rows), KDD Cup
# 2012 track 2 `training.txt` (149.6M rows). Then either give this notebook their paths as
# parameters, e.g.
#
# ```
# papermill notebooks/00_data.ipynb runs/00_full.ipynb -p criteo_file /data/criteo/train.txt
# ```
#
# or prepare them once from the command line and point later notebooks at the prepared folders:
#
# ```
# optfusion-lab prepare --dataset criteo --input /data/criteo/train.txt --out data/criteo
# ```
#
# Preparation streams the file (memory is bounded apart from the vocabularies) and reuses an
# existing output when the file and the options are unchanged.

# %% [markdown]
# ## Results

# %%
results = {"threshold": threshold}
for ds, d in prepared.items():
    results[f"{ds}_rows"] = int(sum(d.meta["num_rows"].values()))
    results[f"{ds}_features"] = d.num_features
    results[f"{ds}_click_rate"] = round(float(summary.loc[ds, "click rate"]), 4)
for ds, auc in ceilings.items():
    results[f"{ds}_true_auc"] = round(float(auc), 4)
results["teacher_features"] = teacher_meta["num_features"]
write_results(out, results)

# %% [markdown]
# ## Exercises
#
# 1. Which raw values of a Criteo integer field map to token 3? To token 4? Write the inverse of
#    the transform and check it with `criteo_integer_tokens`.
# 2. Re-run the notebook with `threshold = 5` (a Papermill parameter). How many features are
#    left, and which fields lose most of their rows to the OOV id?
# 3. `PrepareConfig("kdd12", drop_impression=True)` drops the `Impression` field. Why might the
#    impression count leak information about the label?
# 4. In the Avazu sample, compare the click rate per value of a planted first-order column
#    (`banner_pos`) with that of a noise column (`device_type`). Which spreads more?
# 5. The samples' true AUC is far below 1. Why can no model reach 1 on these labels?
