"""Colours and small helpers shared by every figure of :mod:`optfusion_lab.viz`."""

from __future__ import annotations

import plotly.express as px

# Fusion operations keep one colour in every figure (legend = key).
OPERATION_COLOURS = {
    "add": "#1b9e77",
    "prod": "#d95f02",
    "concat": "#7570b3",
    "att": "#e7298a",
    "att-lite": "#66a61e",
}
# Node kinds of the diagram; dead nodes are grey.
NODE_COLOURS = {
    "embedding": "#5e3c99",
    "shallow": "#e08214",
    "deep": "#2166ac",
    "output": "#1a7837",
    "dead": "#d9d9d9",
}
EDGE_OFF = "#c8c8c8"  # alpha <= 0
EDGE_PRUNED = "#969696"  # active but not live
EDGE_FIXED = "#404040"  # a hand-made design's edge (no alpha)
DIFFERENT = "#d62728"  # what differs between genotypes side by side
ALPHA_SCALE = "Blues"  # colour of live edges by alpha
PHASE_FILL = ("#f2f2f2", "#e3ecf7")  # alternating shades of search phases
FONT = dict(family="Arial, Helvetica, sans-serif", size=12)

_PALETTE = px.colors.qualitative.Dark24


def operation_colour(operation: str, index: int = 0) -> str:
    return OPERATION_COLOURS.get(operation, _PALETTE[index % len(_PALETTE)])


def series_colour(index: int) -> str:
    """A colour for the index-th series (e.g. a source node) of a figure."""
    return _PALETTE[index % len(_PALETTE)]


def base_layout(title: str, **extra) -> dict:
    """Layout shared by the figures: a title, a white template and a readable font."""
    return dict(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white",
                font=FONT, hoverlabel=dict(font=FONT), **extra)  # fmt: skip
