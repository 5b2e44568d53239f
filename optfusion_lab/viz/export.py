"""Text and file exports: the fusion graph as Graphviz DOT and Mermaid, figures as offline HTML.

:func:`to_dot` and :func:`to_mermaid` write what the derived model keeps (live nodes and edges,
one node per line, layers side by side), for a paper (``dot -Tpdf``) or a README (GitHub renders
Mermaid). ``include_pruned=True`` adds the dead nodes (dashed) and the pruned and off edges
(dashed / dotted), e.g. to show a supernet in the middle of a search. Edge labels are alpha with
two decimals when the source has alpha (a searched genotype); hand-made designs have none.

:func:`write_html` puts figures in one self-contained page: plotly.js is embedded once, so the
file opens offline (no script is loaded from the network).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.graph_objects as go

from ..io import write_atomic
from .state import Edge, FusionState, state_of


def _layer(node: str) -> int | None:
    """The layer of C1..CL / D1..DL (None for E, C0 and OUT)."""
    return int(node[1:]) if node[:1] in ("C", "D") and node != "C0" else None


def _label_lines(state: FusionState, node: str) -> list[str]:
    lines = [node, state.block_of(node)]
    op = state.operation_of(node)
    if op is not None:
        lines.append(op)
    return lines


def _drawn(state: FusionState, include_pruned: bool) -> tuple[list[str], list[Edge]]:
    """The nodes and edges an export shows, in graph order (E and OUT always)."""
    if include_pruned:
        return list(state.graph.nodes), list(state.graph.edges)
    live = set(state.live_nodes) | {"E", "OUT"}
    return [n for n in state.graph.nodes if n in live], list(state.live_edges)


def _alpha_label(state: FusionState, edge: Edge) -> str | None:
    alpha = state.alpha_of(edge)
    return None if alpha is None else f"{alpha:.2f}"


def to_dot(source, *, name: str = "fusion", include_pruned: bool = False) -> str:
    """The fusion graph of ``source`` (anything :func:`~.state.state_of` takes) in Graphviz DOT."""
    state = state_of(source)
    nodes, edges = _drawn(state, include_pruned)
    lines = [f'digraph "{_dot_escape(name)}" {{', "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fillcolor="#f2f2f2", '
             'fontname="Helvetica"];']  # fmt: skip
    for node in nodes:
        label = "\\n".join(_dot_escape(t) for t in _label_lines(state, node))
        extra = "" if state.node_status(node) == "live" else \
            ', style="rounded,dashed", fontcolor="#888888"'  # fmt: skip
        lines.append(f'  {node} [label="{label}"{extra}];')
    for layer in sorted({_layer(n) for n in nodes} - {None}):
        same = [n for n in nodes if _layer(n) == layer]
        if len(same) > 1:
            lines.append(f"  {{ rank=same; {'; '.join(same)}; }}")
    for edge in edges:
        attrs = []
        label = _alpha_label(state, edge)
        if label is not None:
            attrs.append(f'label="{label}"')
        status = state.edge_status(edge)
        if status != "live":
            attrs.append('style=dashed, color="#888888"' if status == "pruned"
                         else 'style=dotted, color="#bbbbbb"')  # fmt: skip
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {edge[0]} -> {edge[1]}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_mermaid(source, *, include_pruned: bool = False) -> str:
    """The fusion graph of ``source`` as a Mermaid flowchart (left to right)."""
    state = state_of(source)
    nodes, edges = _drawn(state, include_pruned)
    lines = ["flowchart LR"]
    for node in nodes:
        label = "<br/>".join(html.escape(t, quote=True) for t in _label_lines(state, node))
        dead = ":::dead" if state.node_status(node) != "live" else ""
        lines.append(f'  {node}["{label}"]{dead}')
    for edge in edges:
        label = _alpha_label(state, edge)
        arrow = "-->" if state.edge_status(edge) == "live" else "-.->"
        text = f"|{label}|" if label is not None else ""
        lines.append(f"  {edge[0]} {arrow}{text} {edge[1]}")
    if any(state.node_status(n) != "live" for n in nodes):
        lines.append("  classDef dead fill:#eeeeee,stroke:#999999,color:#999999,"
                     "stroke-dasharray:4 3")  # fmt: skip
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- offline HTML


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def html_page(figures: Mapping[str, go.Figure] | Sequence[go.Figure],
              title: str = "optfusion-lab figures") -> str:  # fmt: skip
    """One HTML page holding ``figures`` (a name -> figure mapping, or a list), with plotly.js
    embedded once: it renders without any network access."""
    items = list(figures.items()) if isinstance(figures, Mapping) else \
        [(f"Figure {i + 1}", f) for i, f in enumerate(figures)]  # fmt: skip
    if not items:
        raise ValueError("html_page needs at least one figure")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:Arial,Helvetica,sans-serif;margin:24px;}"
        "h2{font-size:18px;margin-top:32px;}</style>",
        "</head>", "<body>", f"<h1>{html.escape(title)}</h1>",
    ]  # fmt: skip
    used: set[str] = set()
    for k, (name, fig) in enumerate(items):
        div_id = _slug(name)
        while div_id in used:
            div_id += "-x"
        used.add(div_id)
        parts.append(f'<h2 id="{div_id}-title">{html.escape(str(name))}</h2>')
        parts.append(fig.to_html(full_html=False, include_plotlyjs=k == 0, div_id=div_id,
                                 config={"displaylogo": False, "responsive": True}))  # fmt: skip
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def diagram_html(source) -> str:
    """The fusion diagram of ``source`` as an HTML fragment with plotly.js embedded (about
    5 MB): what a notebook shows for a genotype (``Genotype._repr_html_``), offline."""
    from .diagram import fusion_diagram

    return fusion_diagram(source).to_html(full_html=False, include_plotlyjs=True,
                                          config={"displaylogo": False})  # fmt: skip


def write_html(figures: Mapping[str, go.Figure] | Sequence[go.Figure], path: str | Path,
               title: str = "optfusion-lab figures") -> Path:  # fmt: skip
    """Write :func:`html_page` of ``figures`` to ``path`` atomically; return the path."""
    path = Path(path)
    page = html_page(figures, title)
    write_atomic(path, lambda p: p.write_text(page, encoding="utf-8"))
    return path
