"""Figures over seeds and epochs: genotype stability, results with error bars, training curves.

- :func:`stability_figure` reads a stability summary (``stability.json`` of ``optfusion-lab search
  --seeds``, or :func:`optfusion_lab.fusion_search.stability_summary`'s dict).
- :func:`results_figure` draws one metric per model as mean +- sample std over seeds, with every
  seed as a dot; it reads ``result.json`` documents (of ``train``, ``retrain`` or ``search``),
  their run directories, or a tidy frame.
- :func:`training_curves` draws the per-epoch history (``history.csv`` of a train/retrain run,
  ``epochs.csv`` of a search run) per seed and phase, or several such histories by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..models.genotype import FusionGraph
from .state import layers_in
from .style import base_layout, series_colour

METRIC_LABELS = {
    "test_auc": "test AUC",
    "test_logloss": "test LogLoss (nats)",
    "best_valid_auc": "best validation AUC",
    "best_valid_logloss": "best validation LogLoss (nats)",
    "valid_auc": "validation AUC",
    "valid_logloss": "validation LogLoss (nats)",
    "train_loss": "training loss (BCE, nats)",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


# ---------------------------------------------------------------- stability


def load_stability(source) -> dict:
    """A stability document: a path to ``stability.json`` (or its run directory), the JSON dict,
    or :func:`~optfusion_lab.fusion_search.stability_summary`'s dict of frames; returned as
    ``{"num_genotypes", "seeds", "edges": DataFrame, "operations": DataFrame}``."""
    if isinstance(source, str | Path):
        path = Path(source)
        path = path / "stability.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no stability summary (run the search with "
                                    "--seeds S1 S2 ...)")  # fmt: skip
        try:
            source = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON stability summary ({exc})") from exc
    if not isinstance(source, Mapping) or not {"edges", "operations"} <= set(source):
        raise ValueError("not a stability summary: it needs 'edges' and 'operations'")
    edges, operations = (pd.DataFrame(source[k]) for k in ("edges", "operations"))
    for frame, columns, what in ((edges, {"edge", "live_share"}, "edges"),
                                 (operations, {"node", "operation", "win_share", "live_share"},
                                  "operations")):  # fmt: skip
        missing = columns - set(frame.columns)
        if missing:
            raise ValueError(f"stability summary: {what} lack the columns {sorted(missing)}")
    return {"num_genotypes": source.get("num_genotypes"), "seeds": source.get("seeds"),
            "edges": edges, "operations": operations}  # fmt: skip


def stability_figure(
    source, *, title: str = "Stability of the found fusion over seeds"
) -> go.Figure:
    """Left: the share of seeds in which each candidate edge is live (destination x source).
    Right: per fusion node, how often each operation wins among the seeds in which the node is
    live (the node's own live share is in its row label). ``source``: see :func:`load_stability`.
    """
    doc = load_stability(source)
    edges, ops = doc["edges"], doc["operations"]
    pairs = [tuple(str(e).split("->")) for e in edges["edge"]]
    if any(len(p) != 2 for p in pairs):
        raise ValueError("stability summary: edges must be written 'src->dst'")
    graph = FusionGraph(layers_in([n for p in pairs for n in p]))
    live = {p: float(v) for p, v in zip(pairs, edges["live_share"], strict=True)}
    rows, cols = list(graph.nodes[1:]), list(graph.nodes[:-1])
    z = [[live.get((s, d)) if s in graph.candidates(d) else None for s in cols] for d in rows]
    n = doc["num_genotypes"]
    seeds = doc["seeds"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.2,
                        subplot_titles=["share of seeds with the edge live",
                                        "share of live seeds won by each operation"])  # fmt: skip
    fig.add_trace(go.Heatmap(
        z=z, x=cols, y=rows, zmin=0, zmax=1, colorscale="Greens", xgap=2, ygap=2,
        text=[["" if v is None else f"{v:.2f}" for v in r] for r in z], texttemplate="%{text}",
        hoverongaps=False, showscale=False,
        hovertemplate="<b>%{x} → %{y}</b><br>live in %{z:.0%} of seeds<extra></extra>",
        meta=dict(kind="edge-stability"),
    ), row=1, col=1)  # fmt: skip
    nodes = [m for m in graph.fusion_nodes if m in set(ops["node"])]
    operations = list(dict.fromkeys(ops["operation"]))
    table = ops.set_index(["node", "operation"])
    wins = [[_number(table.loc[(m, o), "win_share"]) if (m, o) in table.index else None
             for o in operations] for m in nodes]  # fmt: skip
    node_live = {m: _number(ops[ops["node"] == m]["live_share"].iloc[0]) for m in nodes}
    labels = [f"{m} (live {node_live[m]:.0%})" if node_live[m] is not None else m for m in nodes]
    fig.add_trace(go.Heatmap(
        z=wins, x=operations, y=labels, zmin=0, zmax=1, colorscale="Greens", xgap=2, ygap=2,
        text=[["never live" if v is None else f"{v:.2f}" for v in r] for r in wins],
        texttemplate="%{text}", colorbar=dict(title=dict(text="share"), x=1.02, len=0.9),
        hovertemplate="<b>%{y}</b><br>%{x} wins in %{z:.0%} of the seeds where it is live"
                      "<extra></extra>",
        meta=dict(kind="operation-stability"),
    ), row=1, col=2)  # fmt: skip
    fig.update_xaxes(title_text="source node", row=1, col=1)
    fig.update_yaxes(title_text="destination node", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="operation", row=1, col=2)
    fig.update_yaxes(title_text="fusion node", autorange="reversed", row=1, col=2)
    over = f"{n} searches" + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
    fig.update_layout(**base_layout(f"{title}<br><sup>{over}</sup>"), autosize=True, height=520,
                      margin=dict(t=110))  # fmt: skip
    return fig


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# ---------------------------------------------------------------- results over seeds


def load_result(source) -> dict:
    """A ``result.json`` document from a dict, the file, or its run directory."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    path = path / "result.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no result.json")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not a JSON result ({exc})") from exc


def results_frame(results: Mapping[str, object] | pd.DataFrame, metric: str) -> pd.DataFrame:
    """Tidy (model, seed, value) rows of ``metric``. ``results`` maps a model's name to its
    ``result.json`` (document, file or run directory), or is a frame with the columns model,
    seed and ``metric``."""
    if isinstance(results, pd.DataFrame):
        missing = {"model", "seed", metric} - set(results.columns)
        if missing:
            raise ValueError(f"results frame lacks the columns {sorted(missing)}")
        return results[["model", "seed", metric]].rename(columns={metric: "value"})
    rows = []
    for model, source in results.items():
        doc = load_result(source)
        entry = doc.get(metric)
        if not isinstance(entry, Mapping) or "per_seed" not in entry:
            metrics = sorted(k for k, v in doc.items() if isinstance(v, Mapping))
            raise ValueError(f"{model}: result has no per-seed {metric!r} (it has {metrics})")
        seeds = doc.get("seeds") or list(range(len(entry["per_seed"])))
        rows += [{"model": model, "seed": s, "value": v}
                 for s, v in zip(seeds, entry["per_seed"], strict=True)]  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "seed", "value"])


def results_figure(results: Mapping[str, object] | pd.DataFrame, metric: str = "test_auc", *,
                   title: str | None = None) -> go.Figure:  # fmt: skip
    """``metric`` per model: mean +- sample standard deviation over seeds (error bars), every
    seed a small dot beside it. Models keep the order given."""
    frame = results_frame(results, metric)
    if frame.empty:
        raise ValueError("no results to draw")
    models = list(dict.fromkeys(frame["model"]))
    stats = frame.groupby("model", sort=False)["value"].agg(["mean", "std", "count"])
    stats["std"] = stats["std"].fillna(0.0)  # one seed: no spread
    label = metric_label(metric)
    position = {m: i for i, m in enumerate(models)}
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=list(range(len(models))), y=[stats.loc[m, "mean"] for m in models], mode="markers",
        name="mean +- std",
        error_y=dict(type="data", array=[stats.loc[m, "std"] for m in models], thickness=1.5,
                     width=8),
        marker=dict(size=11, color="#2166ac", symbol="diamond"),
        customdata=[[m, stats.loc[m, "std"], int(stats.loc[m, "count"])] for m in models],
        hovertemplate="<b>%{customdata[0]}</b><br>mean %{y:.5f}<br>std %{customdata[1]:.5f}"
                      "<br>%{customdata[2]} seeds<extra></extra>",
        meta=dict(kind="mean-std", models=models),
    ))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=[position[m] + 0.18 for m in frame["model"]], y=frame["value"], mode="markers",
        name="one seed", marker=dict(size=6, color="#969696", opacity=0.8),
        customdata=list(zip(frame["model"], frame["seed"], strict=True)),
        hovertemplate="<b>%{customdata[0]}</b><br>seed %{customdata[1]}: %{y:.5f}"
                      "<extra></extra>",
        meta=dict(kind="seeds"),
    ))  # fmt: skip
    counts = sorted({int(c) for c in stats["count"]})
    seeds = "/".join(map(str, counts))
    heading = title or f"{label} per model"
    fig.update_layout(**base_layout(f"{heading}<br><sup>mean +- sample std over {seeds} seeds; "
                                    "grey dots: single seeds</sup>"),
                      autosize=True, height=460,
                      xaxis=dict(title=dict(text="model"), tickvals=list(range(len(models))),
                                 ticktext=models, range=[-0.6, len(models) - 0.4]),
                      yaxis=dict(title=dict(text=label)))  # fmt: skip
    return fig


def against_chance_figure(genotypes: Mapping[str, Sequence], metric: str = "edge_agreement", *,
                          truth=None, count: int = 200, title: str | None = None) -> go.Figure:
    """One :func:`~optfusion_lab.models.teacher.score_genotype` metric per variant against its
    own chance: a bar per variant (the mean over its genotypes, one per seed, +- sample std),
    a diamond at the 95th percentile of chance's distribution of that mean and a dash at its
    mean (:func:`~optfusion_lab.models.teacher.mean_against_chance`, ``count`` draws). Chance
    depends on the genotypes (their number of live edges, their live nodes), so each variant
    has its own; a bar above its diamond beats chance. ``truth``: the teacher's genotype by
    default."""
    import dataclasses

    from ..models.teacher import TEACHER_GENOTYPE, mean_against_chance, score_genotype

    truth = truth or TEACHER_GENOTYPE
    variants = [v for v, found in genotypes.items() if found]
    if not variants:
        raise ValueError("no genotypes to score")
    values = {v: [dataclasses.asdict(score_genotype(g, truth))[metric] for g in genotypes[v]]
              for v in variants}
    chance = {v: mean_against_chance(list(genotypes[v]), truth, count)[metric] for v in variants}
    spread = [pd.Series(values[v]).std() if len(values[v]) > 1 else 0.0 for v in variants]
    label = metric.replace("_", " ")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=variants, y=[sum(values[v]) / len(values[v]) for v in variants],
                         error_y=dict(type="data", array=spread), name=f"{label}, mean +- std",
                         marker_color="#6baed6", meta=dict(kind="found")))
    fig.add_trace(go.Scatter(x=variants, y=[chance[v]["chance_p95"] for v in variants],
                             mode="markers", name="chance, 95th percentile of the mean",
                             marker=dict(symbol="diamond", size=11, color="#d6604d"),
                             meta=dict(kind="chance-p95")))
    fig.add_trace(go.Scatter(x=variants, y=[chance[v]["chance_mean"] for v in variants],
                             mode="markers", name="chance, mean",
                             marker=dict(symbol="line-ew-open", size=22, color="#4d4d4d"),
                             meta=dict(kind="chance-mean")))
    seeds = "/".join(sorted({str(len(genotypes[v])) for v in variants}))
    fig.update_layout(**base_layout(f"{title or label + ' with the teacher'}<br><sup>mean +- "
                                    f"std over {seeds} seeds against chance for the same "
                                    "genotypes</sup>"),
                      autosize=True, height=440,
                      yaxis=dict(title=dict(text=label)))
    return fig


# ---------------------------------------------------------------- training curves


def load_epochs(source) -> pd.DataFrame:
    """A per-epoch history: a frame, a CSV file, or a run directory (``epochs.csv`` of a search,
    else ``history.csv`` of a train/retrain run)."""
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / "epochs.csv" if (path / "epochs.csv").is_file() else path / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-epoch history")
    frame = pd.read_csv(path)
    if "epoch" not in frame.columns or "kind" in frame.columns:
        raise ValueError(f"{path}: not a per-epoch history (an 'epoch' column per row of "
                         "metrics is expected)")  # fmt: skip
    return frame


def training_curves(
    histories, metrics: Sequence[str] = ("train_loss", "valid_auc", "valid_logloss"), *,
    title: str = "Training curves",
) -> go.Figure:  # fmt: skip
    """One panel per metric over epochs, one line per run, seed and phase. ``histories``: one
    per-epoch history (see :func:`load_epochs`) or a mapping name -> history."""
    named = histories if isinstance(histories, Mapping) else {"": histories}
    frames = {name: load_epochs(h) for name, h in named.items()}
    present = [m for m in metrics if any(m in f.columns for f in frames.values())]
    if not present:
        raise ValueError(f"none of the metrics {list(metrics)} is in the history")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=[metric_label(m)
                                                                   for m in present])  # fmt: skip
    index = 0
    for name, frame in frames.items():
        keys = [k for k in ("phase", "seed") if k in frame.columns]
        groups = frame.groupby(keys, sort=False) if keys else [((), frame)]
        for key, part in groups:
            key = key if isinstance(key, tuple) else (key,)
            bits = [name] if name else []
            bits += [f"{k} {v}" for k, v in zip(keys, key, strict=True)]
            line = ", ".join(bits) or "run"
            colour = series_colour(index)
            index += 1
            for col, metric in enumerate(present, start=1):
                if metric not in part.columns:
                    continue
                fig.add_trace(go.Scatter(
                    x=part["epoch"], y=part[metric], mode="lines+markers", name=line,
                    legendgroup=line, showlegend=col == 1, line=dict(color=colour),
                    hovertemplate=f"<b>{line}</b><br>epoch %{{x}}<br>{metric_label(metric)} "
                                  "%{y:.5f}<extra></extra>",
                    meta=dict(kind="curve", metric=metric, run=line),
                ), row=1, col=col)  # fmt: skip
    for col, metric in enumerate(present, start=1):
        fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text=metric_label(metric), row=1, col=col)
    fig.update_layout(**base_layout(title), autosize=True, height=420)
    return fig
