"""Figures of a search's architecture history: alpha and the operation weights over steps.

Both take the tidy frame of :class:`optfusion_lab.fusion_search.ArchitectureHistory`
(``history.csv`` of a search run: phase, step, epoch, when, kind, node, input, operation, value)
and draw one panel per destination / fusion node. The phases of a sequential search are shaded
and named. Each trace carries ``meta`` (``kind``: ``alpha``, ``crossings``, ``weight``,
``final-choice``), which tests and callers can rely on.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..models.genotype import FusionGraph
from .state import _one_run, from_history, layers_in, state_of
from .style import PHASE_FILL, base_layout, operation_colour, series_colour

PANEL_COLUMNS = 4  # panels per row


def _grid(titles: list[str]) -> tuple[go.Figure, int]:
    cols = min(PANEL_COLUMNS, len(titles))
    rows = math.ceil(len(titles) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes="all",
                        horizontal_spacing=0.06,
                        vertical_spacing=0.16 if rows > 1 else 0.1)  # fmt: skip
    return fig, cols


def _cell(index: int, cols: int) -> dict:
    return dict(row=index // cols + 1, col=index % cols + 1)


def phase_spans(frame: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(phase, first step, last step) of each phase, in run order."""
    spans = []
    for phase, part in frame.groupby("phase", sort=False):
        spans.append((str(phase), float(part["step"].min()), float(part["step"].max())))
    return spans


def _shade_phases(fig: go.Figure, frame: pd.DataFrame) -> str:
    """Shade each phase when there are several (a sequential search); return their legend."""
    spans = phase_spans(frame)
    if len(spans) < 2:
        return ""
    names = ("light grey", "light blue")
    parts = []
    for k, (phase, start, end) in enumerate(spans):
        fig.add_vrect(x0=start, x1=end, fillcolor=PHASE_FILL[k % len(PHASE_FILL)], opacity=1.0,
                      layer="below", line_width=0, row="all", col="all")  # fmt: skip
        parts.append(f"{names[k % len(names)]}: phase {phase} (steps {start:g}-{end:g})")
    return "; ".join(parts)


def _kind(history: pd.DataFrame, kind: str) -> pd.DataFrame:
    frame = _one_run(history)
    return frame[frame["kind"] == kind]


def crossings(values: list[float], steps: list[float], threshold: float) -> list[tuple]:
    """(step, direction) each time a series crosses ``threshold``: ``on`` when it goes above it,
    ``off`` when it falls to or below it. The step is the first record on the new side."""
    found = []
    for (a, b), step in zip(zip(values, values[1:], strict=False), steps[1:], strict=True):
        if (a > threshold) != (b > threshold):
            found.append((step, "on" if b > threshold else "off"))
    return found


def alpha_evolution(history: pd.DataFrame, *, threshold: float = 0.0,
                    title: str = "Edge weights alpha during the search") -> go.Figure:  # fmt: skip
    """One line per candidate edge (alpha over optimizer steps), one panel per destination node.

    The threshold (an edge is on when alpha > ``threshold``; the gate uses 0) is a dashed line in
    every panel; each time an edge crosses it an ``x`` marks the step (hover: which edge, on or
    off). Lines keep one colour per source node across panels. A fixed-design history has no
    alpha: that is a ValueError.
    """
    frame = _kind(history, "alpha")
    if frame.empty:
        raise ValueError("the history has no alpha rows: a fixed design (--design) or a derived "
                         "model learns no edges")  # fmt: skip
    graph = FusionGraph(layers_in(frame["node"].astype(str).unique()))
    destinations = [n for n in graph.nodes[1:] if n in set(frame["node"])]
    fig, cols = _grid([f"inputs of {n}" for n in destinations])
    legend_done = set()
    n_cross = 0
    for k, node in enumerate(destinations):
        cell = _cell(k, cols)
        part = frame[frame["node"] == node]
        marks_x, marks_y, marks_text = [], [], []
        for src in graph.candidates(node):
            series = part[part["input"] == src]
            if series.empty:
                continue
            steps, values = series["step"].tolist(), series["value"].tolist()
            colour = series_colour(graph.nodes.index(src))
            fig.add_trace(
                go.Scatter(
                    x=steps, y=values, mode="lines", name=f"from {src}", legendgroup=src,
                    showlegend=src not in legend_done, line=dict(color=colour, width=1.8),
                    hovertemplate=f"<b>{src} → {node}</b><br>step %{{x}}<br>alpha %{{y:.4f}}"
                                  "<extra></extra>",
                    meta=dict(kind="alpha", edge=f"{src}->{node}"),
                ),
                **cell,
            )  # fmt: skip
            legend_done.add(src)
            for step, direction in crossings(values, steps, threshold):
                marks_x.append(step)
                marks_y.append(threshold)
                marks_text.append(f"{src} → {node} turned {direction} at step {step}")
        n_cross += len(marks_x)
        fig.add_trace(
            go.Scatter(x=marks_x, y=marks_y, mode="markers", name="crossed the threshold",
                       legendgroup="crossings", showlegend=k == 0,
                       marker=dict(symbol="x", size=10, color="#d62728", line=dict(width=1)),
                       hovertext=marks_text, hoverinfo="text",
                       meta=dict(kind="crossings", node=node, count=len(marks_x))),
            **cell,
        )  # fmt: skip
        fig.add_hline(y=threshold, line=dict(color="#444444", dash="dash", width=1), **cell)
    phases = _shade_phases(fig, frame)
    rows = math.ceil(len(destinations) / cols)
    fig.update_xaxes(title_text="optimizer step", row=rows)
    fig.update_yaxes(title_text="alpha (on if > 0)", col=1)
    sub = f"dashed: threshold {threshold:g} (edge on above it); x: {n_cross} crossing(s)"
    sub = f"{sub}<br>{phases}" if phases else sub
    fig.update_layout(**base_layout(f"{title}<br><sup>{sub}</sup>"), height=330 * rows + 130,
                      autosize=True, legend=dict(title=dict(text="source node")),
                      margin=dict(t=140))  # fmt: skip
    return fig


def operation_weights_evolution(
    history: pd.DataFrame, *, title: str = "Operation weights softmax(beta) during the search"
) -> go.Figure:
    """softmax(beta) of each operation over steps, one panel per fusion node; a star marks the
    operation each node ends with (the argmax of its last record), named in the panel title."""
    frame = _kind(history, "weight")
    if frame.empty:
        raise ValueError("the history has no operation-weight rows")
    final = from_history(history)
    graph = FusionGraph(final.num_layers)
    nodes = [n for n in graph.fusion_nodes if n in set(frame["node"])]
    fig, cols = _grid([f"{n}: ends with {final.operation_of(n)}" for n in nodes])
    operations = list(dict.fromkeys(frame["operation"].astype(str)))
    for k, node in enumerate(nodes):
        cell = _cell(k, cols)
        part = frame[frame["node"] == node]
        chosen = final.operation_of(node)
        for j, op in enumerate(operations):
            series = part[part["operation"] == op]
            steps, values = series["step"].tolist(), series["value"].tolist()
            colour = operation_colour(op, j)
            fig.add_trace(
                go.Scatter(
                    x=steps, y=values, mode="lines", name=op, legendgroup=op, showlegend=k == 0,
                    line=dict(color=colour, width=2.5 if op == chosen else 1.5),
                    hovertemplate=f"<b>{node}: {op}</b><br>step %{{x}}<br>weight %{{y:.4f}}"
                                  "<extra></extra>",
                    meta=dict(kind="weight", node=node, operation=op),
                ),
                **cell,
            )  # fmt: skip
            if op == chosen and steps:
                fig.add_trace(
                    go.Scatter(x=[steps[-1]], y=[values[-1]], mode="markers",
                               name="final choice", legendgroup="final", showlegend=k == 0,
                               marker=dict(symbol="star", size=14, color=colour,
                                           line=dict(color="#000000", width=1)),
                               hovertext=[f"{node} ends with {op} ({values[-1]:.3f})"],
                               hoverinfo="text",
                               meta=dict(kind="final-choice", node=node, operation=op)),
                    **cell,
                )  # fmt: skip
    phases = _shade_phases(fig, frame)
    rows = math.ceil(len(nodes) / cols)
    fig.update_xaxes(title_text="optimizer step", row=rows)
    fig.update_yaxes(title_text="weight (share of 1)", range=[0, 1.02], col=1)
    fig.update_yaxes(range=[0, 1.02])
    sub = "star: the operation each node ends with (argmax)" + (f"<br>{phases}" if phases else "")
    fig.update_layout(**base_layout(f"{title}<br><sup>{sub}</sup>"), height=330 * rows + 120,
                      autosize=True,
                      legend=dict(title=dict(text="operation")), margin=dict(t=140))  # fmt: skip
    return fig


def alpha_heatmap(source, *, title: str = "Final alpha per candidate edge") -> go.Figure:
    """alpha as a destination x source grid over the candidate edges (blank elsewhere); blue is
    on (alpha > 0), red off. ``source`` is anything :func:`~.state.state_of` takes that has
    alpha (a genotype, a search network, a history: its last record)."""
    state = state_of(source)
    if state.alpha is None:
        raise ValueError("this fusion graph has no alpha (a fixed design)")
    graph = state.graph
    rows, cols = list(graph.nodes[1:]), list(graph.nodes[:-1])
    z = [[state.alpha_of((src, dst)) if src in graph.candidates(dst) else None for src in cols]
         for dst in rows]  # fmt: skip
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    bound = max((abs(v) for row in z for v in row if v is not None), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, text=text, texttemplate="%{text}", colorscale="RdBu", zmid=0.0,
        zmin=-bound, zmax=bound, xgap=2, ygap=2, hoverongaps=False,
        colorbar=dict(title=dict(text="alpha")),
        hovertemplate="<b>%{x} → %{y}</b><br>alpha %{z:.4f}<extra></extra>",
        meta=dict(kind="alpha-heatmap"),
    ))  # fmt: skip
    n_on = len(state.active)
    sub = f"{n_on} of {len(graph.edges)} edges on (alpha > 0); blank: not a candidate edge"
    fig.update_layout(**base_layout(f"{title}{': ' + state.name if state.name else ''}"
                                    f"<br><sup>{sub}</sup>"),
                      width=620, height=520)  # fmt: skip
    fig.update_xaxes(title_text="source node", side="bottom")
    fig.update_yaxes(title_text="destination node", autorange="reversed")
    return fig
