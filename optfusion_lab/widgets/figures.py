"""The monitor's plotly figures, as pure functions of the data it holds.

The same functions build the static figures of a headless run and the live ones (redrawn in
the panel's Output widgets), so the two always look alike. Inputs are plain arrays:
steps (n,) and values (n, lines) from :class:`~optfusion_lab.widgets.series.SnapshotBuffer`,
and ``boundaries``, a list of ``(step, label)`` where a phase, a seed or a fit begins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# One colour per operation, the same in every figure of the project's monitor.
OPERATION_COLOURS = {
    "add": "#1f77b4",
    "prod": "#d62728",
    "concat": "#2ca02c",
    "att": "#9467bd",
    "att-lite": "#8c564b",
}
LAYER_COLOURS = ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _go():
    import plotly.graph_objects as go

    return go


def _boundary_shapes(fig, boundaries: Sequence[tuple[float, str]], **subplot) -> None:
    for step, label in boundaries:
        fig.add_vline(x=step, line_dash="dot", line_color="#888", annotation_text=label,
                      annotation_position="top left", annotation_font_size=10, **subplot)


def edge_colour(destination: str, nodes: Sequence[str]) -> str:
    """Colour of the edges into ``destination``: one per destination node."""
    return LAYER_COLOURS[list(nodes).index(destination) % len(LAYER_COLOURS)]


def alpha_figure(
    steps: np.ndarray,
    values: np.ndarray,
    edges: Sequence[tuple[str, str]],
    boundaries: Sequence[tuple[float, str]] = (),
    height: int = 330,
):
    """alpha of every candidate edge over steps: one line per edge (``src->dst``), coloured by
    destination node, the gate threshold alpha = 0 drawn."""
    go = _go()
    destinations = list(dict.fromkeys(dst for _, dst in edges))
    traces = [
        go.Scatter(
            x=steps, y=values[:, i], mode="lines", name=f"{src}\u2192{dst}",
            legendgroup=dst, legendgrouptitle_text=f"into {dst}" if src == first else None,
            line={"width": 1.5, "color": edge_colour(dst, destinations)},
            hovertemplate=f"{src}\u2192{dst}<br>step %{{x}}<br>alpha %{{y:.3f}}<extra></extra>",
        )
        for i, (src, dst) in enumerate(edges)
        for first in [next(s for s, d in edges if d == dst)]
    ]
    fig = go.Figure(data=traces)
    fig.update_layout(
        title="alpha per candidate edge (the edge is on while alpha > 0)",
        xaxis_title="step", yaxis_title="alpha", height=height,
        margin={"l": 50, "r": 10, "t": 40, "b": 40}, legend={"groupclick": "toggleitem"},
        uirevision="alpha",
    )
    fig.add_hline(y=0, line_color="black", line_width=1)
    _boundary_shapes(fig, boundaries)
    return fig


def operation_figure(
    steps: np.ndarray,
    values: np.ndarray,
    nodes: Sequence[str],
    operations: Sequence[str],
    boundaries: Sequence[tuple[float, str]] = (),
    height: int = 280,
):
    """Operation weights (softmax(beta)) of every fusion node over steps: one panel per node,
    one line per operation. ``values`` columns are node-major: node 0's operations first."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=len(nodes), shared_yaxes=True, subplot_titles=list(nodes),
                        horizontal_spacing=0.015)
    for n, node in enumerate(nodes):
        for o, op in enumerate(operations):
            fig.add_trace(
                go.Scatter(
                    x=steps, y=values[:, n * len(operations) + o], mode="lines", name=op,
                    legendgroup=op, showlegend=n == 0,
                    line={"width": 1.5, "color": OPERATION_COLOURS.get(op)},
                    hovertemplate=f"{node} {op}<br>step %{{x}}<br>weight %{{y:.3f}}<extra></extra>",
                ),
                row=1, col=n + 1,
            )
    fig.update_yaxes(range=[0, 1])
    fig.update_yaxes(title_text="operation weight", row=1, col=1)
    fig.update_xaxes(showticklabels=True, nticks=3)
    fig.update_layout(title="operation weights softmax(beta) per fusion node", height=height,
                      margin={"l": 50, "r": 10, "t": 60, "b": 30}, uirevision="operations")
    for step, _label in boundaries:
        for n in range(len(nodes)):
            fig.add_vline(x=step, line_dash="dot", line_color="#888", row=1, col=n + 1)
    return fig


def metrics_figure(
    epochs: Sequence[dict],
    loss_steps: np.ndarray | None = None,
    losses: np.ndarray | None = None,
    boundaries: Sequence[tuple[float, str]] = (),
    height: int = 260,
):
    """Training loss (sampled steps and epoch means) and validation AUC per epoch, over steps.

    ``epochs``: dicts with ``step`` (the global step at the epoch's end), ``train_loss``,
    ``valid_auc`` and ``label`` (which fit: phase or seed)."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training loss", "validation AUC"],
                        horizontal_spacing=0.08)
    empty = np.zeros(0)
    fig.add_trace(go.Scatter(x=loss_steps if loss_steps is not None else empty,
                             y=losses if losses is not None else empty, mode="lines",
                             name="loss (sampled steps)", line={"width": 1, "color": "#aaa"}),
                  row=1, col=1)
    steps = [e["step"] for e in epochs]
    fig.add_trace(go.Scatter(x=steps, y=[e["train_loss"] for e in epochs], mode="lines+markers",
                             name="loss (epoch mean)", line={"color": "#1f77b4"},
                             text=[e["label"] for e in epochs]), row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[e["valid_auc"] for e in epochs], mode="lines+markers",
                             name="valid AUC", line={"color": "#d62728"},
                             text=[e["label"] for e in epochs]), row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      uirevision="metrics")
    for step, _label in boundaries:
        for col in (1, 2):
            fig.add_vline(x=step, line_dash="dot", line_color="#888", row=1, col=col)
    return fig
