"""optfusion_lab.viz on small fixed data: diagrams, history figures, exports, run folders."""

from __future__ import annotations

import json
import re

import pandas as pd
import pydot
import pytest
import torch

from optfusion_lab import viz
from optfusion_lab.fusion_search import HISTORY_COLUMNS, stability_summary, write_stability
from optfusion_lab.models.genotype import DESIGNS, FusionGraph, Genotype
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.viz.style import DIFFERENT, EDGE_FIXED, NODE_COLOURS

# pydot's parser calls pyparsing names that pyparsing 3.3 deprecates; not ours to fix.
PYDOT_WARNINGS = pytest.mark.filterwarnings("ignore:'\\w+' deprecated - use")
OPS = ("add", "prod", "concat", "att")
# One layer: E, C0, C1, D1, OUT; 9 candidate edges in graph order:
# E->C0 | E->C1 C0->C1 | E->D1 C0->D1 | E->OUT C0->OUT C1->OUT D1->OUT
ALPHA = [0.5, 0.8, -0.2, 0.3, 0.4, -0.1, 0.6, 0.9, -0.5]
# D1 is active (E->D1, C0->D1) but D1->OUT is off: D1 is pruned (does not reach OUT).
BETA = [[2.0, 0.0, 0.0, 0.0],  # C1: add
        [0.0, 0.0, 0.0, 1.0],  # D1: att
        [0.0, 0.0, 3.0, 0.0]]  # OUT: concat  # fmt: skip


def genotype(alpha=ALPHA, beta=BETA) -> Genotype:
    return Genotype.from_arch(num_fields=3, embed_dim=2, num_layers=1, shallow="cross",
                              operations=OPS, alpha=alpha, beta=beta)  # fmt: skip


def edge_traces(fig, col: int | None = None) -> list:
    traces = [t for t in fig.data if t.meta and t.meta.get("kind") == "edge"]
    if col is None:
        return traces
    axis = "x" if col == 1 else f"x{col}"
    return [t for t in traces if t.xaxis == axis]


def node_trace(fig, col: int = 1):
    axis = "x" if col == 1 else f"x{col}"
    return next(t for t in fig.data if t.meta and t.meta.get("kind") == "nodes" and t.xaxis == axis)


# ---------------------------------------------------------------- fusion state


def test_state_liveness_matches_the_genotype_on_random_graphs():
    gen = torch.Generator().manual_seed(0)
    graph = FusionGraph(3)
    checked = 0
    for _ in range(200):
        alpha = (torch.rand(len(graph.edges), generator=gen) - 0.6).tolist()
        beta = torch.randn(len(graph.fusion_nodes), 4, generator=gen).tolist()
        try:
            g = Genotype.from_arch(num_fields=2, embed_dim=2, num_layers=3, shallow="cross",
                                   operations=OPS, alpha=alpha, beta=beta)  # fmt: skip
        except ValueError:  # OUT without a live input: not a genotype, still a state
            state = viz.FusionState(3, OPS, tuple(e for e, a in zip(graph.edges, alpha,
                                                                    strict=True) if a > 0),
                                    tuple(alpha), None)  # fmt: skip
            assert state.out_is_dead and state.live_edges == ()
            continue
        state = viz.state_of(g)
        assert state.live_edges == g.live_edges()
        assert set(state.live_nodes) - {"E", "OUT"} == set(g.live_blocks())
        assert all(state.operation_of(n.node) == n.operation for n in g.nodes)
        checked += 1
    assert checked > 50


def test_state_of_a_search_network_follows_its_alpha_and_operation_weights():
    torch.manual_seed(0)
    net = FusionNetwork(20, 3, SupernetConfig(embed_dim=2, num_layers=1))
    with torch.no_grad():
        net.alpha.copy_(torch.tensor(ALPHA))
        net.beta.copy_(torch.tensor(BETA))
    state = viz.state_of(net)
    assert state.live_edges == genotype().live_edges()
    assert state.operation_of("OUT") == "concat"
    net.fix_operation("add")  # what the network mixes with now, as the history records it
    assert viz.state_of(net).operation_of("OUT") == "add"


def test_state_of_a_derived_model_shows_its_live_edges_and_operations():
    g = genotype()
    hard = FusionNetwork.from_genotype(g, 20, 3, selection="hard")
    soft = FusionNetwork.from_genotype(g, 20, 3, selection="soft")
    for net in (hard, soft):
        state = viz.state_of(net)
        assert state.live_edges == g.live_edges() and state.alpha is None
        assert state.operation_of("OUT") == "concat" and state.operation_of("D1") is None
    assert viz.state_of(soft).weights_of("C1") == pytest.approx(g.choice("C1").weights)


# ---------------------------------------------------------------- diagram


def test_diagram_draws_every_candidate_edge_node_label_and_weight_bar():
    g = genotype()
    fig = viz.fusion_diagram(g, name="fixed")
    edges = edge_traces(fig)
    assert [t.meta["edge"] for t in edges] == [f"{s}->{d}" for s, d in g.graph.edges]  # 9
    status = {t.meta["edge"]: t.meta["status"] for t in edges}
    assert [e for e, s in status.items() if s == "live"] == ["E->C0", "E->C1", "C0->OUT",
                                                            "C1->OUT"]  # fmt: skip
    assert [e for e, s in status.items() if s == "pruned"] == ["E->D1", "C0->D1"]
    assert [e for e, s in status.items() if s == "off"] == ["C0->C1", "E->OUT", "D1->OUT"]
    nodes = node_trace(fig)
    assert list(nodes.text) == ["E", "C0", "C1", "D1", "OUT"]
    assert nodes.meta["dead"] == ["D1"]
    assert list(nodes.marker.color)[3] == NODE_COLOURS["dead"]
    labels = next(t for t in fig.data if t.meta and t.meta.get("kind") == "labels")
    assert list(labels.text) == ["embedding", "cross", "cross · <b>add</b>", "deep · <b>att</b>",
                                 "output · <b>concat</b>"]  # fmt: skip
    bars = {t.meta["operation"]: t for t in fig.data if t.meta and t.meta.get("kind") == "weights"}
    assert list(bars) == list(OPS)
    for op_index, op in enumerate(OPS):  # one bar per fusion node, height = its weight
        weights = [n.weights[op_index] for n in g.nodes]
        assert len(bars[op].y) == 3
        assert bars[op].y == pytest.approx([w * viz.diagram.BAR_HEIGHT for w in weights])
    assert "fixed" in fig.layout.title.text and "4 of 9 edges live, OUT: concat" in \
        fig.layout.title.text  # fmt: skip
    live = next(t for t in edges if t.meta["edge"] == "C1->OUT")
    weak = next(t for t in edges if t.meta["edge"] == "E->C0")
    assert live.line.width > weak.line.width  # alpha 0.9 > 0.5
    assert "alpha = 0.900" in live.hovertemplate
    assert "operation: att" in nodes.hovertext[3] and "does not reach OUT" in nodes.hovertext[3]


def test_toggle_hides_exactly_the_pruned_and_off_edges():
    fig = viz.fusion_diagram(genotype())
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all edges", "live edges only"]
    live_only = buttons[1].args[0]["visible"]
    hidden = {t.meta["edge"] for t, v in zip(fig.data, live_only, strict=True) if not v}
    assert hidden == {"E->D1", "C0->D1", "C0->C1", "E->OUT", "D1->OUT"}
    assert all(buttons[0].args[0]["visible"])
    start_hidden = viz.fusion_diagram(genotype(), show_pruned=False)
    assert {t.meta["edge"] for t in edge_traces(start_hidden) if t.visible is False} == hidden


def test_dead_nodes_and_a_dead_out_mid_search_are_drawn_not_errors():
    torch.manual_seed(0)
    net = FusionNetwork(20, 3, SupernetConfig(embed_dim=2, num_layers=1))
    with torch.no_grad():  # OUT's inputs all off: no genotype can be derived
        net.alpha.copy_(torch.tensor([0.5, 0.8, -0.2, 0.3, 0.4, -0.1, -0.6, -0.9, -0.5]))
    with pytest.raises(ValueError, match="OUT has no active input"):
        net.genotype()
    fig = viz.fusion_diagram(net)
    assert "OUT has no live input" in fig.layout.title.text
    assert node_trace(fig).meta["dead"] == ["E", "C0", "C1", "D1", "OUT"]
    assert not any(t.meta["status"] == "live" for t in edge_traces(fig))
    assert len(edge_traces(fig)) == 9
    assert "OUT" in viz.to_dot(net) and "OUT" in viz.to_mermaid(net, include_pruned=True)
    assert viz.alpha_heatmap(net).data[0].z[-1] == pytest.approx([-0.1, -0.6, -0.9, -0.5])


def test_hand_made_designs_are_points_of_the_space_drawn_the_same_way():
    for name in viz.HAND_MADE:
        fig = viz.fusion_diagram(name)
        state = viz.hand_made(name)
        assert [t.meta["edge"] for t in edge_traces(fig) if t.meta["status"] == "live"] == \
            [f"{s}->{d}" for s, d in state.live_edges]  # fmt: skip
        assert all(t.line.color == EDGE_FIXED for t in edge_traces(fig)
                   if t.meta["status"] == "live")  # fmt: skip
    parallel = viz.hand_made("parallel", num_layers=2)
    assert set(parallel.live_edges) == set(DESIGNS["parallel"](FusionGraph(2)))
    assert parallel.operation_of("OUT") == "concat"
    assert viz.hand_made("dcnv2-stacked").shallow == "crossv2"
    with pytest.raises(ValueError, match="unknown hand-made design"):
        viz.hand_made("wide-and-deep")


def test_side_by_side_marks_exactly_the_differing_edges_and_operations():
    a = genotype()
    # b: C1->OUT off, so C1 is pruned (its active inputs E->C1, C0->C1 with it); D1 is live
    # through D1->OUT; OUT prefers add. Pruned edges count as absent.
    b = genotype(alpha=[0.5, 0.8, 0.7, 0.3, -0.4, -0.1, 0.6, -0.9, 0.5],
                 beta=[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    fig = viz.compare_diagrams([a, b, a], ["a", "b", "a again"])
    # live a: E->C0 E->C1 C0->OUT C1->OUT; live b: E->C0 E->D1 C0->OUT D1->OUT
    expected_edges = {"E->C1", "C1->OUT", "E->D1", "D1->OUT"}
    assert set(fig.layout.meta["different_edges"]) == expected_edges
    assert fig.layout.meta["different_nodes"] == ["OUT"]  # C1, D1 are live in one: edges tell
    for col in (1, 2, 3):
        marked = {t.meta["edge"] for t in edge_traces(fig, col) if t.meta["differs"]}
        assert marked == expected_edges
        assert all(t.line.color == DIFFERENT for t in edge_traces(fig, col) if t.meta["differs"])
        widths = node_trace(fig, col).marker.line.width
        assert [n for n, w in zip(node_trace(fig, col).text, widths, strict=True) if w > 1] == \
            ["OUT"]  # fmt: skip
    assert "4 edge(s) and 1 operation(s) differ" in fig.layout.title.text
    same = viz.compare_diagrams([a, a])
    assert same.layout.meta["different_edges"] == [] and same.layout.meta["different_nodes"] == []
    with pytest.raises(ValueError, match="different numbers of layers"):
        viz.compare_diagrams([a, viz.hand_made("parallel", num_layers=2)])
    beside = viz.compare_diagrams([a, "parallel"])  # the design takes a's single layer
    assert len(edge_traces(beside, 2)) == 9


# ---------------------------------------------------------------- history figures


def history_frame() -> pd.DataFrame:
    """Two phases of a sequential search on the one-layer graph, recorded at 4 steps."""
    graph = FusionGraph(1)
    rows = []
    records = [("connections", 0, "start"), ("connections", 10, "step"),
               ("connections", 20, "epoch"), ("operations", 20, "start"),
               ("operations", 30, "step")]  # fmt: skip
    for k, (phase, step, when) in enumerate(records):
        for e, (src, dst) in enumerate(graph.edges):
            value = 0.5 - 0.1 * k * (e % 3)  # edges 1, 4, 7 fall slowly, 2, 5, 8 cross at k=3
            rows.append((phase, step, 1, when, "alpha", dst, src, "", value))
        for n, node in enumerate(graph.fusion_nodes):
            weights = [0.25] * 4 if phase == "connections" else \
                [0.1, 0.2, 0.3 + 0.1 * n, 0.4 - 0.1 * n]  # fmt: skip
            for op, w in zip(OPS, weights, strict=True):
                rows.append((phase, step, 1, when, "weight", node, "", op, w))
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def test_alpha_evolution_has_a_line_per_edge_the_threshold_crossings_and_phases():
    fig = viz.alpha_evolution(history_frame())
    lines = [t for t in fig.data if t.meta["kind"] == "alpha"]
    assert [t.meta["edge"] for t in lines] == [f"{s}->{d}" for s, d in FusionGraph(1).edges]
    assert all(list(t.x) == [0, 10, 20, 20, 30] for t in lines)
    marks = [t for t in fig.data if t.meta["kind"] == "crossings"]
    assert [t.meta["node"] for t in marks] == ["C0", "C1", "D1", "OUT"]  # one panel each
    crossed = sorted(h for t in marks for h in t.hovertext)
    # values 0.5 - 0.2 k cross 0 between k=2 (0.1) and k=3 (-0.1): at the 4th record, step 20
    edges = FusionGraph(1).edges
    assert crossed == sorted(f"{s} → {d} turned off at step 20"
                             for e, (s, d) in enumerate(edges) if e % 3 == 2)  # fmt: skip
    thresholds = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(thresholds) == 4 and all(s.y0 == s.y1 == 0 for s in thresholds)
    phases = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(phases) == 2 * 4 and {(s.x0, s.x1) for s in phases} == {(0, 20), (20, 30)}
    assert "phase connections" in fig.layout.title.text
    assert any(ax.title.text == "optimizer step" for ax in fig.select_xaxes())
    assert any(ax.title.text == "alpha (on if > 0)" for ax in fig.select_yaxes())
    assert "Edge weights alpha" in fig.layout.title.text
    assert len(viz.alpha_evolution(history_frame(), threshold=0.35).layout.shapes) >= 4


def test_history_errors_are_clear():
    two_seeds = pd.concat([history_frame().assign(seed=0), history_frame().assign(seed=1)])
    with pytest.raises(ValueError, match="several seeds"):
        viz.alpha_evolution(two_seeds)
    fixed = history_frame()
    with pytest.raises(ValueError, match="no alpha rows"):
        viz.alpha_evolution(fixed[fixed.kind == "weight"])
    with pytest.raises(ValueError, match="not an architecture history"):
        viz.alpha_evolution(pd.DataFrame({"epoch": [1]}))


def test_operation_weights_evolution_marks_the_final_choice():
    fig = viz.operation_weights_evolution(history_frame())
    lines = [t for t in fig.data if t.meta["kind"] == "weight"]
    assert len(lines) == 3 * 4
    stars = {t.meta["node"]: t.meta["operation"] for t in fig.data
             if t.meta["kind"] == "final-choice"}  # fmt: skip
    # last weights: C1 [.1 .2 .3 .4] -> att; D1 [.1 .2 .4 .3] -> concat; OUT [.1 .2 .5 .2]
    assert stars == {"C1": "att", "D1": "concat", "OUT": "concat"}
    titles = [a.text for a in fig.layout.annotations]
    assert "C1: ends with att" in titles
    assert viz.from_history(history_frame(), step=10).operation_of("C1") == "add"  # a tie: first


def test_alpha_heatmap_is_blank_off_the_candidate_edges():
    fig = viz.alpha_heatmap(genotype())
    z = fig.data[0].z
    assert list(fig.data[0].y) == ["C0", "C1", "D1", "OUT"]
    assert list(fig.data[0].x) == ["E", "C0", "C1", "D1"]
    assert list(z[0]) == [0.5, None, None, None]
    assert list(z[3]) == pytest.approx([-0.1, 0.6, 0.9, -0.5])
    assert fig.layout.xaxis.title.text == "source node"
    with pytest.raises(ValueError, match="no alpha"):
        viz.alpha_heatmap("parallel")


# ---------------------------------------------------------------- text exports

EXPECTED_DOT = """\
digraph "fixed" {
  rankdir=LR;
  node [shape=box, style="rounded,filled", fillcolor="#f2f2f2", fontname="Helvetica"];
  E [label="E\\nembedding"];
  C0 [label="C0\\ncross"];
  C1 [label="C1\\ncross\\nadd"];
  OUT [label="OUT\\noutput\\nconcat"];
  E -> C0 [label="0.50"];
  E -> C1 [label="0.80"];
  C0 -> OUT [label="0.60"];
  C1 -> OUT [label="0.90"];
}
"""

EXPECTED_MERMAID = """\
flowchart LR
  E["E<br/>embedding"]
  C0["C0<br/>cross"]
  C1["C1<br/>cross<br/>add"]
  OUT["OUT<br/>output<br/>concat"]
  E -->|0.50| C0
  E -->|0.80| C1
  C0 -->|0.60| OUT
  C1 -->|0.90| OUT
"""


@PYDOT_WARNINGS
def test_dot_and_mermaid_equal_the_expected_texts_and_dot_parses():
    g = genotype()
    assert viz.to_dot(g, name="fixed") == EXPECTED_DOT
    assert viz.to_mermaid(g) == EXPECTED_MERMAID
    (graph,) = pydot.graph_from_dot_data(EXPECTED_DOT)
    assert sorted(n.get_name() for n in graph.get_nodes() if n.get_name() != "node") == \
        ["C0", "C1", "E", "OUT"]  # fmt: skip
    assert [(e.get_source(), e.get_destination()) for e in graph.get_edges()] == \
        list(g.live_edges())  # fmt: skip
    full = viz.to_dot(g, include_pruned=True)
    (parsed,) = pydot.graph_from_dot_data(full)
    assert len(parsed.get_edges()) == 9 and "style=dotted" in full and "style=dashed" in full
    assert "D1 -.->|0.30| D1" not in viz.to_mermaid(g, include_pruned=True)
    assert "E -.->|0.30| D1" in viz.to_mermaid(g, include_pruned=True)
    assert "classDef dead" in viz.to_mermaid(g, include_pruned=True)


@PYDOT_WARNINGS
def test_dot_of_a_layer_with_both_blocks_live_ranks_them_together():
    dot = viz.to_dot("parallel")
    assert "{ rank=same; C1; D1; }" in dot and "label=" in dot and "->" in dot
    assert "[label=\"0." not in dot  # a hand-made design has no alpha
    (parsed,) = pydot.graph_from_dot_data(dot)
    assert len(parsed.get_edges()) == len(DESIGNS["parallel"](FusionGraph(3)))


# ---------------------------------------------------------------- seeds, results, curves


def test_stability_figure_shows_the_live_and_win_shares_of_stability_json(tmp_path):
    a, b = genotype(), genotype(beta=[[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0],
                                      [3.0, 0.0, 0.0, 0.0]])  # fmt: skip
    c = genotype(alpha=[0.5, 0.8, -0.2, 0.3, 0.4, -0.1, 0.6, 0.9, 0.5])  # D1 live
    write_stability(tmp_path, stability_summary([a, b, c], [0, 1, 2]))
    fig = viz.stability_figure(tmp_path)  # the run folder, or stability.json itself
    edges, ops = fig.data
    assert list(edges.y) == ["C0", "C1", "D1", "OUT"]
    assert edges.z[3] == pytest.approx([0.0, 1.0, 1.0, 1 / 3])  # E->OUT off, D1->OUT in c
    assert edges.z[0][1] is None  # C0 has E as its only candidate
    assert list(ops.x) == list(OPS)
    assert list(ops.y) == ["C1 (live 100%)", "D1 (live 33%)", "OUT (live 100%)"]
    assert ops.z[2] == pytest.approx([1 / 3, 0.0, 2 / 3, 0.0])  # OUT: add in b, concat in a, c
    assert "3 searches (seeds 0, 1, 2)" in fig.layout.title.text
    same = viz.stability_figure(json.loads((tmp_path / "stability.json").read_text()))
    assert same.data[0].z == edges.z
    with pytest.raises(FileNotFoundError, match="--seeds"):
        viz.stability_figure(tmp_path / "nothing")


def test_results_figure_draws_mean_and_sample_std_over_seeds():
    docs = {"dcn": {"seeds": [0, 1, 2], "test_auc": {"per_seed": [0.70, 0.72, 0.74]}},
            "dnn": {"seeds": [0, 1], "test_auc": {"per_seed": [0.71, 0.71]}}}  # fmt: skip
    fig = viz.results_figure(docs)
    means, seeds = fig.data
    assert means.y == pytest.approx([0.72, 0.71])
    assert means.error_y.array == pytest.approx([0.02, 0.0])  # sample std (ddof=1)
    assert len(seeds.y) == 5
    assert fig.layout.yaxis.title.text == "test AUC"
    assert list(fig.layout.xaxis.ticktext) == ["dcn", "dnn"]
    frame = pd.DataFrame({"model": ["a", "a"], "seed": [0, 1], "test_logloss": [0.5, 0.7]})
    fig = viz.results_figure(frame, "test_logloss")
    assert fig.data[0].error_y.array == pytest.approx([0.1414213562])
    assert fig.layout.yaxis.title.text == "test LogLoss (nats)"
    with pytest.raises(ValueError, match="no per-seed 'test_auc'"):
        viz.results_figure({"x": {"seeds": [0]}})


def test_training_curves_have_a_line_per_seed_and_metric():
    frame = pd.DataFrame({"seed": [0, 0, 1, 1], "epoch": [1, 2, 1, 2],
                          "train_loss": [0.6, 0.5, 0.61, 0.52],
                          "valid_auc": [0.7, 0.72, 0.69, 0.71],
                          "valid_logloss": [0.5, 0.49, 0.51, 0.5]})  # fmt: skip
    fig = viz.training_curves(frame)
    assert len(fig.data) == 2 * 3
    assert {t.meta["run"] for t in fig.data} == {"seed 0", "seed 1"}
    assert [a.text for a in fig.layout.annotations] == ["training loss (BCE, nats)",
                                                       "validation AUC",
                                                       "validation LogLoss (nats)"]  # fmt: skip
    assert fig.layout.xaxis.title.text == "epoch"
    both = viz.training_curves({"a": frame, "b": frame}, metrics=("valid_auc",))
    assert {t.meta["run"] for t in both.data} == {"a, seed 0", "a, seed 1", "b, seed 0",
                                                  "b, seed 1"}  # fmt: skip


def test_wide_figures_fill_their_container_instead_of_a_fixed_width(tmp_path):
    """A fixed width wider than JupyterLab's output area cut the diagram's colour bar; these
    figures set their height only and autosize to the output area (or the page)."""
    frame = pd.DataFrame({"seed": [0, 0], "epoch": [1, 2], "valid_auc": [0.7, 0.72],
                          "valid_logloss": [0.5, 0.49]})  # fmt: skip
    write_stability(tmp_path, stability_summary([genotype(), genotype()], [0, 1]))
    figures = {
        "diagram": viz.fusion_diagram(genotype()),
        "compared": viz.compare_diagrams([genotype(), "parallel"]),
        "alpha": viz.alpha_evolution(history_frame()),
        "weights": viz.operation_weights_evolution(history_frame()),
        "stability": viz.stability_figure(tmp_path),
        "curves": viz.training_curves(frame),
        "results": viz.results_figure({f"model {i}": {"seeds": [0, 1], "test_auc": {
            "per_seed": [0.7, 0.71]}} for i in range(12)}),
        "chance": viz.against_chance_figure({"truth": [genotype()]}, "edge_recall",
                                            truth=genotype(), count=10),
    }
    for name, fig in figures.items():
        assert fig.layout.width is None, f"{name} fixes its width at {fig.layout.width} px"
        assert fig.layout.autosize is True and fig.layout.height > 0, name


# ---------------------------------------------------------------- HTML, notebooks, images


def assert_offline(html: str) -> None:
    assert not re.search(r"<script[^>]*\bsrc=", html), "a script is loaded from elsewhere"
    assert "plotly.js v" in html or "Plotly" in html  # the library itself is inline
    assert len(html) > 1_000_000  # plotly.js is several MB


def test_exported_html_embeds_plotly_once_and_every_figure(tmp_path):
    figures = {"fusion graph": viz.fusion_diagram(genotype()),
               "alpha evolution": viz.alpha_evolution(history_frame())}  # fmt: skip
    path = viz.write_html(figures, tmp_path / "figures.html", title="Small run")
    page = path.read_text()
    assert_offline(page)
    assert page.count("Plotly.newPlot(") == 2
    assert 'id="fusion-graph"' in page and 'id="alpha-evolution"' in page
    assert "<title>Small run</title>" in page
    plain = viz.fusion_diagram(genotype()).to_html(full_html=False, include_plotlyjs=False)
    assert len(page) > len(plain) + 1_000_000  # plotly.js is there once...
    assert len(page) < 2 * len(viz.html_page([figures["fusion graph"]]))  # ...and only once
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_a_genotype_shows_as_its_diagram_in_a_notebook():
    html = genotype()._repr_html_()
    assert_offline(html)
    assert html.count("Plotly.newPlot(") == 1 and r"C1-\u003eOUT" in html  # an edge's meta (JSON)


# ---------------------------------------------------------------- run folders


def write_search_folder(path, g: Genotype, seed: int = 0) -> None:
    path.mkdir(parents=True)
    g.save(path / "genotype.json")
    history_frame().to_csv(path / "history.csv", index=False)
    epochs = pd.DataFrame({"phase": ["connections", "operations"], "seed": [seed, seed],
                           "epoch": [1, 1], "train_loss": [0.6, 0.5], "valid_auc": [0.7, 0.71],
                           "valid_logloss": [0.5, 0.49]})  # fmt: skip
    epochs.to_csv(path / "epochs.csv", index=False)
    (path / "config.json").write_text(json.dumps(
        {"supernet": {"shallow": "cross"}, "train": {"seed": seed},
         "search": {"algorithm": "sequential"}}))  # fmt: skip
    (path / "result.json").write_text(json.dumps(
        {"seeds": [seed], "test_auc": {"mean": 0.7 + seed / 100, "std": 0.0,
                                       "per_seed": [0.7 + seed / 100]}}))  # fmt: skip


def test_one_call_per_figure_from_a_run_folder(tmp_path):
    run = tmp_path / "search"
    write_search_folder(run, genotype())
    view = viz.from_run(run)
    assert view.alpha_evolution().data and view.operation_weights().data
    beside = view.beside("parallel")
    assert [a.text.split("<br>")[0] for a in beside.layout.annotations[:2]] == \
        ["<b>found (sequential, seed 0)</b>", "<b>parallel</b>"]  # fmt: skip
    assert "C1->OUT" not in beside.layout.meta["different_edges"]  # both designs have it
    assert view.dot() == viz.to_dot(genotype())
    figures = view.figures()
    assert list(figures) == ["alpha evolution", "operation weights", "fusion graph",
                             "final alpha", "beside the parallel design", "training curves",
                             "results"]  # fmt: skip
    page = view.write_html()
    assert page == run / "figures.html"
    html = page.read_text()
    assert_offline(html)
    assert html.count("Plotly.newPlot(") == len(figures)


def test_a_multi_seed_search_folder_gives_stability_and_per_seed_figures(tmp_path):
    run = tmp_path / "seeds"
    other = genotype(alpha=[0.5, 0.8, -0.2, 0.3, 0.4, -0.1, 0.6, 0.9, 0.5])
    write_stability(run, stability_summary([genotype(), other], [0, 1]))  # claims the folder
    write_search_folder(run / "seed_0", genotype(), 0)
    write_search_folder(run / "seed_1", other, 1)
    view = viz.from_run(run)
    assert view.seeds == (0, 1)
    assert view.stability().data[0].meta["kind"] == "edge-stability"
    assert view.state(1).live_edges == other.live_edges()
    # seed 1 turns D1->OUT on, which makes D1 and its inputs live
    assert view.compare_seeds().layout.meta["different_edges"] == ["C0->D1", "D1->OUT", "E->D1"]
    assert view.results().data[0].y == pytest.approx([0.705])  # mean of the two searches
    assert "stability over seeds" in view.figures()
    with pytest.raises(FileNotFoundError, match="seed 7"):
        view.alpha_evolution(seed=7)


def test_a_run_without_a_genotype_is_drawn_from_its_history(tmp_path):
    run = tmp_path / "collapsed"
    write_search_folder(run, genotype())
    (run / "genotype.json").unlink()
    (run / "supernet.pt").write_bytes(b"")  # what a collapsed search keeps
    state = viz.from_run(run).state()
    assert "no genotype" in state.name
    assert state.alpha == pytest.approx([0.5, 0.1, -0.3] * 3)  # the last record (k = 4)


@pytest.mark.slow
def test_figures_of_a_real_sequential_search(tmp_path, teacher_dir):
    from optfusion_lab.data.dataset import PreparedData
    from optfusion_lab.fusion_search import SearchConfig, search, write_search_run
    from optfusion_lab.train import TrainConfig

    data = PreparedData.open(teacher_dir)
    supernet = SupernetConfig(embed_dim=2, num_layers=2)
    train = TrainConfig(epochs=1, batch_size=512, device="cpu", progress=False, threads=1, seed=0)
    searched = SearchConfig(history_every=5, algorithm="sequential")
    result = search(data, supernet, train, searched)
    write_search_run(tmp_path / "run", result, data, supernet, train, searched)
    view = viz.from_run(tmp_path / "run")
    figures = view.figures()
    alpha = figures["alpha evolution"]
    assert len([t for t in alpha.data if t.meta["kind"] == "alpha"]) == len(FusionGraph(2).edges)
    assert len([s for s in alpha.layout.shapes if s.type == "rect"]) == 2 * 6  # 2 phases
    diagram = figures["fusion graph"]
    assert node_trace(diagram).meta["nodes"] == list(FusionGraph(2).nodes)
    assert {t.meta["edge"] for t in edge_traces(diagram) if t.meta["status"] == "live"} == \
        {f"{s}->{d}" for s, d in result.genotype.live_edges()}  # fmt: skip
    assert_offline(view.write_html().read_text())


def test_against_chance_figure_draws_each_variants_mean_beside_its_own_chance():
    """Bars: each variant's mean score over its genotypes; diamonds and dashes: the 95th
    percentile and mean of that variant's chance (mean_against_chance with the same draws)."""
    from optfusion_lab.models.teacher import (
        TEACHER_GENOTYPE,
        mean_against_chance,
        random_genotypes,
        score_genotype,
    )

    genotypes = {"teacher": [TEACHER_GENOTYPE] * 2,
                 "random": random_genotypes(TEACHER_GENOTYPE, 2, seed=3)}
    fig = viz.against_chance_figure(genotypes, "edge_recall", count=100)
    bars, p95, mean = fig.data
    assert list(bars.x) == ["teacher", "random"] and bars.y[0] == 1.0
    assert bars.y[1] == pytest.approx(
        sum(score_genotype(g).edge_recall for g in genotypes["random"]) / 2)
    for i, variant in enumerate(bars.x):
        chance = mean_against_chance(genotypes[variant], count=100)["edge_recall"]
        assert p95.y[i] == chance["chance_p95"] and mean.y[i] == chance["chance_mean"]
    assert bars.y[0] > p95.y[0]  # the truth beats chance
    with pytest.raises(ValueError, match="no genotypes"):
        viz.against_chance_figure({"empty": []})
