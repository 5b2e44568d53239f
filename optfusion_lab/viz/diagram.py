"""The fusion graph as a diagram, alone or compared, as plotly figures.

Nodes are laid out by depth: ``E`` on the left, ``C0``, then one column per layer (shallow block
``Ci`` above, deep block ``Di`` below), ``OUT`` on the right. Every candidate edge is drawn as a
curve with an arrowhead:

- *live* edges (kept by the derived model) in blue, wider and darker as alpha grows (black for a
  hand-made design, which has no alpha);
- *pruned* edges (alpha > 0, but a dead end) dashed grey, and *off* edges (alpha <= 0) dotted light
  grey. The buttons "all edges" / "live edges only" (and a click on their legend entries) hide
  them.

Dead nodes are grey. Every fusion node carries its block and chosen operation under its name and a
small bar chart of its operation weights (one colour per operation, the legend is the key); hover
over a node, an edge or a bar for the numbers. Each trace carries ``meta`` (``kind``: ``edge``,
``nodes``, ``labels``, ``weights``, ``alpha-scale``; edges also ``edge``, ``status``,
``differs``), which tests and callers can rely on.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .state import Edge, FusionState, hand_made, state_of
from .style import (
    ALPHA_SCALE,
    DIFFERENT,
    EDGE_FIXED,
    EDGE_OFF,
    EDGE_PRUNED,
    NODE_COLOURS,
    base_layout,
    operation_colour,
)

CURVE_POINTS = 25  # points per edge curve (hover works anywhere along it)
NODE_SIZE = 40  # px, the side of a node's square
BAR_HEIGHT = 0.24  # data units of a weight bar at weight 1
BAR_WIDTH = 0.07
BAR_GAP = 0.45  # from a row's node centre to its bars (clears the arcs of that row's edges)
Y_RANGE = (-2.15, 2.15)
LEGEND = dict(orientation="h", x=0.0, y=-0.06, yanchor="top")
HIDDEN_STATUSES = ("pruned", "off")  # what "live edges only" hides
STATUS_LEGEND = {
    "live": "live edge (width/colour: alpha)",
    "pruned": "pruned edge (alpha > 0, dead end)",
    "off": "off edge (alpha <= 0)",
}


def positions(num_layers: int) -> dict[str, tuple[float, float]]:
    """Diagram coordinates of each node: x = depth, y = +1 shallow row, -1 deep row, 0 E/OUT."""
    pos = {"E": (0.0, 0.0), "C0": (1.0, 1.0), "OUT": (num_layers + 2.0, 0.0)}
    for i in range(1, num_layers + 1):
        pos[f"C{i}"] = (i + 1.0, 1.0)
        pos[f"D{i}"] = (i + 1.0, -1.0)
    return pos


def edge_curve(edge: Edge, pos: dict[str, tuple[float, float]]) -> tuple[list, list]:
    """Points of the quadratic Bezier drawn for ``edge``, trimmed at both nodes' borders.

    Edges along a row that skip columns arc away from the middle of the diagram (more for longer
    spans), so they neither overlap each other nor pass through the nodes they skip.
    """
    (x0, y0), (x1, y1) = pos[edge[0]], pos[edge[1]]
    span = x1 - x0
    bend = 0.0
    if y0 == y1 and y0 != 0 and span > 1:
        bend = (0.6 + 0.25 * (span - 2)) * (1 if y0 > 0 else -1)
    elif y0 != y1 and span > 1:
        bend = 0.12 * (span - 1) * (1 if y0 + y1 > 0 else -1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + bend
    xs, ys = [], []
    dense = CURVE_POINTS * 4
    for k in range(dense + 1):
        t = k / dense
        x = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
        y = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
        if _inside(x, y, x0, y0) or _inside(x, y, x1, y1):
            continue  # hidden under a node
        xs.append(x)
        ys.append(y)
    keep = range(0, len(xs), max(1, len(xs) // CURVE_POINTS))
    idx = sorted({*keep, len(xs) - 1})
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _inside(x: float, y: float, xn: float, yn: float) -> bool:
    return ((x - xn) / 0.13) ** 2 + ((y - yn) / 0.2) ** 2 < 1.0


def _node_kind(node: str) -> str:
    if node == "E":
        return "embedding"
    if node == "OUT":
        return "output"
    return "shallow" if node.startswith("C") else "deep"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _alpha_max(states: Sequence[FusionState]) -> float:
    values = [a for s in states if s.alpha is not None for a in s.alpha if a > 0]
    return max(values, default=1.0)


def _edge_style(state: FusionState, edge: Edge, status: str, amax: float) -> tuple[str, float, str]:
    """(colour, width, dash) of an edge."""
    if status == "off":
        return EDGE_OFF, 1.0, "dot"
    if status == "pruned":
        return EDGE_PRUNED, 1.3, "dash"
    alpha = state.alpha_of(edge)
    if alpha is None:
        return EDGE_FIXED, 2.5, "solid"
    share = min(1.0, max(0.0, alpha / amax))
    return sample_colorscale(ALPHA_SCALE, 0.35 + 0.65 * share)[0], 1.5 + 4.0 * share, "solid"


def _summary(state: FusionState) -> str:
    total = len(state.graph.edges)
    if state.out_is_dead:
        return f"OUT has no live input (a derived model would be constant); {len(state.active)} " \
               f"of {total} edges on"  # fmt: skip
    text = f"{len(state.live_edges)} of {total} edges live"
    op = state.operation_of("OUT")
    return f"{text}, OUT: {op}" if op else text


def _draw(
    fig: go.Figure,
    state: FusionState,
    col: int,
    amax: float,
    show_pruned: bool,
    different_edges: frozenset = frozenset(),
    different_nodes: frozenset = frozenset(),
    legend: bool = True,
    row: int = 1,
) -> None:
    """Add the traces of one diagram to the subplot (``row``, ``col``) of ``fig``."""
    pos = positions(state.num_layers)
    shown_status: set[str] = set()
    for edge in state.graph.edges:
        status = state.edge_status(edge)
        differs = edge in different_edges
        colour, width, dash = _edge_style(state, edge, status, amax)
        if differs:
            colour, width = DIFFERENT, max(width, 3.5)
            dash = "solid" if status == "live" else "dash"
        xs, ys = edge_curve(edge, pos)
        name = f"{edge[0]} → {edge[1]}"
        hover = f"<b>{name}</b><br>alpha = {_fmt(state.alpha_of(edge))}<br>{status}"
        if differs:
            hover += "<br><b>differs between the genotypes</b>"
        group = "differs" if differs else status
        first = legend and group not in shown_status
        shown_status.add(group)
        label = "differs between genotypes" if differs else STATUS_LEGEND[status]
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines+markers", name=label, legendgroup=group,
                showlegend=first, hovertemplate=hover + "<extra></extra>",
                line=dict(color=colour, width=width, dash=dash),
                marker=dict(symbol="arrow", angleref="previous", color=colour,
                            size=[0] * (len(xs) - 1) + [9 + width]),
                opacity=1.0 if status == "live" or differs else 0.8,
                visible=True if show_pruned or status == "live" or differs else False,
                meta=dict(kind="edge", edge=f"{edge[0]}->{edge[1]}", status=status,
                          differs=differs),
            ),
            row=row, col=col,
        )  # fmt: skip

    nodes = state.graph.nodes
    colours, texts, hovers, line_colours = [], [], [], []
    for node in nodes:
        status = state.node_status(node)
        live = status == "live"
        colours.append(NODE_COLOURS[_node_kind(node)] if live else NODE_COLOURS["dead"])
        line_colours.append(DIFFERENT if node in different_nodes else "#ffffff")
        texts.append(node)
        hovers.append(_node_hover(state, node, status, node in different_nodes))
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text",
            text=texts, textposition="middle center", showlegend=False, hovertext=hovers,
            hoverinfo="text",
            textfont=dict(color=["#ffffff" if state.node_status(n) == "live" else "#737373"
                                 for n in nodes], size=13),
            marker=dict(symbol="square", size=NODE_SIZE, color=colours,
                        line=dict(color=line_colours, width=[4 if n in different_nodes else 1
                                                             for n in nodes])),
            meta=dict(kind="nodes", nodes=list(nodes),
                      dead=[n for n in nodes if state.node_status(n) != "live"]),
        ),
        row=row, col=col,
    )  # fmt: skip

    # Labels (block and chosen operation) and weight bars sit outside the rows.
    label_x, label_y, label_text = [], [], []
    bars: dict[str, dict[str, list]] = {op: {"x": [], "y": [], "base": [], "text": []}
                                        for op in state.operations}  # fmt: skip
    track: dict[str, list] = {"x": [], "base": []}  # a light box behind each bar: weight 1
    n_ops = len(state.operations)
    for node in nodes:
        x, y = pos[node]
        op = state.operation_of(node)
        label = state.block_of(node) + (f" · <b>{op}</b>" if op else "")
        if node in different_nodes:
            label = f"<span style='color:{DIFFERENT}'>{label}</span>"
        weights = state.weights_of(node)
        above = y > 0
        bar_base = y + BAR_GAP if above else y - BAR_GAP - BAR_HEIGHT
        label_x.append(x)
        offset = BAR_GAP + BAR_HEIGHT + 0.17  # the label sits beyond the bars
        label_y.append(y + offset if above else y - offset)
        label_text.append(label)
        if weights is None:
            continue
        for k, (o, w) in enumerate(zip(state.operations, weights, strict=True)):
            bar_x = x + (k - (n_ops - 1) / 2) * BAR_WIDTH * 1.15
            track["x"].append(bar_x)
            track["base"].append(bar_base)
            bars[o]["x"].append(bar_x)
            bars[o]["y"].append(max(w, 0.0) * BAR_HEIGHT)
            bars[o]["base"].append(bar_base)
            bars[o]["text"].append(f"{node} · {o}: {w:.3f}")
    fig.add_trace(
        go.Scatter(x=label_x, y=label_y, mode="text", text=label_text, showlegend=False,
                   hoverinfo="skip", textfont=dict(size=11), meta=dict(kind="labels")),
        row=row, col=col,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=track["x"], y=[BAR_HEIGHT] * len(track["x"]), base=track["base"],
               width=BAR_WIDTH, showlegend=False, hoverinfo="skip",
               marker=dict(color="#efefef", line=dict(width=0)), meta=dict(kind="weight-track")),
        row=row, col=col,
    )  # fmt: skip
    for k, (op, bar) in enumerate(bars.items()):
        fig.add_trace(
            go.Bar(x=bar["x"], y=bar["y"], base=bar["base"], width=BAR_WIDTH, name=op,
                   legendgroup=f"op-{op}", showlegend=legend, hovertext=bar["text"],
                   hoverinfo="text", marker=dict(color=operation_colour(op, k)),
                   meta=dict(kind="weights", operation=op)),
            row=row, col=col,
        )  # fmt: skip
    L = state.num_layers
    fig.update_xaxes(
        range=[-0.6, L + 2.6], tickvals=list(range(L + 3)),
        ticktext=["input", "layer 0", *(f"layer {i}" for i in range(1, L + 1)), "output"],
        showgrid=False, zeroline=False, fixedrange=False, row=row, col=col,
    )  # fmt: skip
    fig.update_yaxes(range=list(Y_RANGE), visible=False, row=row, col=col)


def _node_hover(state: FusionState, node: str, status: str, differs: bool) -> str:
    lines = [f"<b>{node}</b> ({state.block_of(node)})", f"status: {status}"]
    if node != "E":
        inputs = [f"{src} (alpha {_fmt(state.alpha_of((src, node)))}, "
                  f"{state.edge_status((src, node))})"
                  for src in state.graph.candidates(node)]  # fmt: skip
        lines.append("inputs: " + "; ".join(inputs))
    weights = state.weights_of(node)
    if weights is not None:
        lines.append(f"operation: {state.operation_of(node)}")
        mix = zip(state.operations, weights, strict=True)
        lines.append("weights: " + ", ".join(f"{o} {w:.3f}" for o, w in mix))
    if differs:
        lines.append("<b>operation differs between the genotypes</b>")
    return "<br>".join(lines)


def _alpha_scale_trace(amax: float) -> go.Scatter:
    """An invisible trace whose only job is the colour bar of alpha."""
    return go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker=dict(colorscale=[[0, sample_colorscale(ALPHA_SCALE, 0.35)[0]],
                                [1, sample_colorscale(ALPHA_SCALE, 1.0)[0]]],
                    cmin=0.0, cmax=amax, color=[0.0], showscale=True,
                    colorbar=dict(title=dict(text="alpha<br>(live)"), len=0.4, y=0.75,
                                  thickness=12, x=1.0)),
        meta=dict(kind="alpha-scale"),
    )  # fmt: skip


def _toggle(fig: go.Figure) -> None:
    """Buttons that show every edge or only the live (and differing) ones."""
    every = [True] * len(fig.data)
    live_only = [not (t.meta and t.meta.get("kind") == "edge"
                      and t.meta["status"] in HIDDEN_STATUSES and not t.meta["differs"])
                 for t in fig.data]  # fmt: skip
    fig.update_layout(updatemenus=[dict(
        type="buttons", direction="left", x=1.0, xanchor="right", y=1.09, yanchor="bottom",
        showactive=True, active=0 if all(t.visible is not False for t in fig.data) else 1,
        buttons=[dict(label="all edges", method="restyle", args=[{"visible": every}]),
                 dict(label="live edges only", method="restyle", args=[{"visible": live_only}])],
    )])  # fmt: skip


def fusion_diagram(source, *, title: str | None = None, show_pruned: bool = True,
                   name: str | None = None) -> go.Figure:  # fmt: skip
    """The fusion graph of ``source`` as a diagram (see the module docstring).

    ``source``: a :class:`~optfusion_lab.models.genotype.Genotype`, a search ``FusionNetwork``
    (its state now, mid-search included), a tidy architecture history (its last record), a
    hand-made design's name (``"parallel"``, ``"dcn"``, ... :data:`~.state.HAND_MADE`) or a
    :class:`~.state.FusionState`. ``show_pruned=False`` starts with pruned and off edges hidden.
    """
    state = state_of(source, name)
    amax = _alpha_max([state])
    fig = make_subplots(rows=1, cols=1)
    _draw(fig, state, 1, amax, show_pruned)
    if state.alpha is not None:
        fig.add_trace(_alpha_scale_trace(amax))
    heading = title or f"Fusion graph{': ' + state.name if state.name else ''}"
    fig.update_layout(**base_layout(f"{heading}<br><sup>{_summary(state)}</sup>"),
                      barmode="overlay", autosize=True, height=640,
                      legend=LEGEND, margin=dict(t=90, l=20, r=20, b=40))  # fmt: skip
    _toggle(fig)
    return fig


def differences(states: Sequence[FusionState]) -> tuple[frozenset[Edge], frozenset[str]]:
    """What differs between fusion states: (edges live in some but not all of them, nodes whose
    chosen operation differs among the states in which the node is live).

    Edges are compared by what the derived models keep (live edges: a pruned edge counts as
    absent); a node live in one state only differs through its edges, not its operation.
    """
    live = [set(s.live_edges) for s in states]
    edges = frozenset(set.union(*live) - set.intersection(*live))
    nodes = set()
    for node in states[0].graph.fusion_nodes:
        ops = {s.operation_of(node) for s in states if node in s.live_nodes}
        if len(ops - {None}) > 1:
            nodes.add(node)
    return edges, frozenset(nodes)


def compare_diagrams(sources: Sequence, names: Sequence[str] | None = None, *,
                     title: str | None = None, show_pruned: bool = False) -> go.Figure:  # fmt: skip
    """Two or more fusion graphs one under another, differences in red (:func:`differences`).

    ``sources`` are anything :func:`fusion_diagram` takes (genotypes of several datasets, seeds
    or algorithms; a hand-made design's name beside a found genotype). They must share the number
    of layers (a design given by name takes theirs). Pruned and off edges start hidden
    (``show_pruned``); the buttons show them.
    """
    if len(sources) < 2:
        raise ValueError("compare_diagrams needs at least two fusion graphs")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} fusion graphs")
    # A design given by name takes the number of layers of the graphs it is compared with.
    drawn = [state_of(s) for s in sources if not isinstance(s, str)]
    layers = drawn[0].num_layers if drawn else 3
    sources = [hand_made(s, layers) if isinstance(s, str) else s for s in sources]
    states = [state_of(s, None if names is None else names[i]) for i, s in enumerate(sources)]
    states = [s if s.name else state_of(s, f"#{i + 1}") for i, s in enumerate(states)]
    layers = {s.num_layers for s in states}
    if len(layers) > 1:
        raise ValueError(f"cannot compare fusion graphs with different numbers of layers: "
                         f"{sorted(layers)}")  # fmt: skip
    edges, nodes = differences(states)
    amax = _alpha_max(states)
    # One under another at a single diagram's width, so that each fits a notebook's page.
    fig = make_subplots(rows=len(states), cols=1, vertical_spacing=0.2 / len(states),
                        subplot_titles=[f"<b>{s.name}</b><br><sup>{_summary(s)}</sup>"
                                        for s in states])  # fmt: skip
    for row, state in enumerate(states, start=1):
        _draw(fig, state, 1, amax, show_pruned, edges, nodes, legend=row == 1, row=row)
    if any(s.alpha is not None for s in states):
        fig.add_trace(_alpha_scale_trace(amax))
    diff = f"{len(edges)} edge(s) and {len(nodes)} operation(s) differ (red)"
    heading = title or "Fusion graphs compared"
    fig.update_layout(**base_layout(f"{heading}<br><sup>{diff}</sup>"), barmode="overlay",
                      autosize=True, height=560 * len(states) + 120,
                      legend=LEGEND,
                      margin=dict(t=120, l=20, r=20, b=40))  # fmt: skip
    fig.update_annotations(yshift=8)
    fig.layout.meta = dict(different_edges=sorted(f"{s}->{d}" for s, d in edges),
                           different_nodes=sorted(nodes))  # fmt: skip
    _toggle(fig)
    return fig
