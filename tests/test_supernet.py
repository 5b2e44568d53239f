"""The OptFusion supernet: graph, modes, derived models, warm start, genotypes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from optfusion_lab.fusion import OPERATIONS
from optfusion_lab.models.genotype import (
    FusionGraph,
    Genotype,
    parallel_edges,
    stacked_edges,
)
from optfusion_lab.models.supernet import (
    FusionNetwork,
    SupernetConfig,
    init_beta,
    supernet_state_for,
)

F, D, N = 5, 3, 60


def supernet(seed=0, **cfg) -> FusionNetwork:
    torch.manual_seed(seed)
    return FusionNetwork(N, F, SupernetConfig(embed_dim=D, **cfg))


def ids(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, N, (batch, F), generator=torch.Generator().manual_seed(seed))


def set_arch(net: FusionNetwork, alpha: torch.Tensor, ops: list[int] | None = None):
    """Fix alpha and make softmax(beta) one-hot on ``ops`` (None: keep beta)."""
    with torch.no_grad():
        net.alpha.copy_(alpha)
        if ops is not None:
            net.beta.fill_(-1e4)
            net.beta[torch.arange(len(ops)), torch.tensor(ops)] = 1e4


def random_alpha(net: FusionNetwork, seed: int) -> torch.Tensor:
    alpha = torch.randn(len(net.graph.edges), generator=torch.Generator().manual_seed(seed))
    alpha[net.graph.edge_slice("OUT")] = alpha[net.graph.edge_slice("OUT")].abs()  # OUT fed
    return alpha


# ---------------------------------------------------------------- graph


def test_graph_has_the_reference_size():
    graph = FusionGraph(3)
    assert graph.nodes == ("E", "C0", "C1", "D1", "C2", "D2", "C3", "D3", "OUT")
    assert len(graph.edges) == 33 and len(graph.fusion_nodes) == 7
    assert graph.candidates("C2") == ("E", "C0", "C1", "D1")
    assert len(graph.candidates("OUT")) == 8
    assert [len(graph.candidates(n)) for n in ("C1", "C2", "C3")] == [2, 4, 6]
    assert len(FusionGraph(2).edges) == 1 + 2 * 2 + 2 * 4 + 6


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("mode", ["search", "fixed-edges"])
def test_arch_and_weight_parameters_partition_parameters(mode):
    edges = parallel_edges(FusionGraph(3)) if mode == "fixed-edges" else None
    net = FusionNetwork(N, F, SupernetConfig(embed_dim=D), mode=mode, edges=edges)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert {id(p) for p in arch}.isdisjoint({id(p) for p in weights})
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in net.parameters()}
    assert len(arch) == (2 if mode == "search" else 1)
    assert net.beta.shape == (7, 4)
    if mode == "search":
        assert torch.all(net.alpha == 0.5) and net.alpha.shape == (33,)


@pytest.mark.parametrize(("ops", "std"), [(4, (2 / 5) ** 0.5), (2, (2 / 3) ** 0.5)])
def test_beta_rows_are_xavier_normal_per_node_as_in_the_reference(ops, std):
    cfg = SupernetConfig(operations=OPERATIONS[:ops])
    beta = torch.empty(4000, ops)  # many nodes: the std of one row must not depend on their number
    torch.manual_seed(0)
    init_beta(beta, cfg)
    assert abs(beta.std().item() - std) < 0.02  # Xavier of a (1, ops) tensor: sqrt(2 / (1 + ops))
    for num_layers in (1, 6):  # the supernet draws the same way for any L
        net = supernet(0, num_layers=num_layers, operations=OPERATIONS[:ops])
        assert net.beta.shape == (2 * num_layers + 1, ops)


def test_alpha_and_beta_initialisation_options():
    net = supernet(0, alpha_init=-0.25, beta_init="uniform")
    assert torch.all(net.alpha == -0.25) and torch.all(net.beta == 0)
    assert torch.allclose(net.operation_weights(), torch.full((7, 4), 0.25))
    beta = torch.empty(4000, 4)
    init_beta(beta, SupernetConfig(beta_init="normal", beta_init_std=0.05))
    assert abs(beta.std().item() - 0.05) < 0.003
    with pytest.raises(ValueError, match="unknown beta_init 'he'"):
        SupernetConfig(beta_init="he")
    with pytest.raises(ValueError, match="beta_init_std must be > 0"):
        SupernetConfig(beta_init="normal", beta_init_std=0.0)
    with pytest.raises(ValueError, match="alpha_init must be a finite number"):
        SupernetConfig(alpha_init=float("nan"))


def test_straight_through_gate_forward_and_backward():
    net = supernet()
    with torch.no_grad():
        net.alpha.copy_(torch.linspace(-1, 1, 33))
    gates = net.edge_gates()
    assert torch.equal(gates, (net.alpha > 0).float())
    weights = torch.randn(33)
    (gates * weights).sum().backward()
    assert torch.equal(net.alpha.grad, weights)  # identity backward


def test_alpha_and_beta_receive_gradients_in_search():
    net = supernet()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(ids(7)), torch.ones(7))
    loss.backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0


# ---------------------------------------------------------------- equivalence


@pytest.mark.parametrize("shallow", ["cross", "crossv2", "cin"])
@pytest.mark.parametrize("seed", range(4))
def test_supernet_with_fixed_mask_and_one_hot_ops_equals_derived_hard(shallow, seed):
    net = supernet(seed, shallow=shallow)
    ops = torch.randint(0, 4, (7,), generator=torch.Generator().manual_seed(seed)).tolist()
    set_arch(net, random_alpha(net, seed), ops)
    genotype = net.genotype()
    assert [n.operation for n in genotype.nodes] == [OPERATIONS[i] for i in ops]
    derived = FusionNetwork.from_genotype(genotype, N, F, "hard")
    derived.load_state_dict(supernet_state_for(derived, net.state_dict()))
    for batch in (1, 7):
        x = ids(batch, seed)
        torch.testing.assert_close(derived(x), net(x), rtol=1e-5, atol=1e-6)
    # The derived model allocates only live nodes and chosen operations.
    assert set(derived.fusions) <= set(genotype.live_blocks()) | {"OUT"}
    for node, fusion in derived.fusions.items():
        assert tuple(fusion.ops) == (genotype.choice(node).operation,)
    assert sum(p.numel() for p in derived.parameters()) < sum(
        p.numel() for p in net.parameters()
    )


@pytest.mark.parametrize("seed", range(3))
def test_supernet_with_fixed_mask_equals_derived_soft(seed):
    net = supernet(seed)
    set_arch(net, random_alpha(net, seed + 10))
    derived = FusionNetwork.from_genotype(net.genotype(), N, F, "soft")
    derived.load_state_dict(supernet_state_for(derived, net.state_dict()))
    torch.testing.assert_close(derived(ids(7)), net(ids(7)), rtol=1e-5, atol=1e-6)


def test_parallel_fixed_edges_equals_a_hand_built_parallel_model():
    torch.manual_seed(0)
    graph = FusionGraph(3)
    net = FusionNetwork(N, F, SupernetConfig(embed_dim=D), mode="fixed-edges",
                        edges=parallel_edges(graph))
    concat = OPERATIONS.index("concat")
    with torch.no_grad():  # ADD everywhere (one input each), CONCAT at OUT
        net.beta.fill_(-1e4)
        net.beta[:, 0] = 1e4
        net.beta[-1] = -1e4
        net.beta[-1, concat] = 1e4
    x = ids(7)
    e = net.embedding.table(x).flatten(1)  # (B, d)
    c = e
    for node in ("C0", "C1", "C2", "C3"):  # x_out = x0 * (x . w) + b + x
        layer = net.blocks[node]
        c = e * (c @ layer.w.weight.T) + layer.b + c
    h = e
    for node in ("D1", "D2", "D3"):
        h = torch.relu(net.blocks[node].linear(h))
    linear = net.fusions["OUT"].ops["concat"].linear
    d = F * D
    w = linear.weight.view(d, 8, d)  # OUT's candidates: E, C0, C1, D1, C2, D2, C3, D3
    fused = c @ w[:, 6].T + h @ w[:, 7].T + linear.bias
    expected = net.output(fused).squeeze(-1)
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)


def test_stacked_design_edges():
    assert stacked_edges(FusionGraph(3)) == (
        ("E", "C0"), ("C0", "D1"), ("D1", "D2"), ("D2", "D3"), ("D3", "OUT"),
    )


# ---------------------------------------------------------------- PROD and dead nodes


def test_prod_over_active_inputs_only_in_search_and_derived():
    net = supernet(3)
    graph = net.graph
    alpha = torch.full((33,), -1.0)
    on = [("E", "C0"), ("E", "C1"), ("C0", "C1"), ("E", "D1"), ("C1", "OUT"), ("D1", "OUT")]
    for edge in on:
        alpha[graph.edges.index(edge)] = 1.0
    set_arch(net, alpha, [OPERATIONS.index("prod")] * 7)
    x = ids(7)
    e = net.embedding.table(x).flatten(1)
    c0 = net.blocks["C0"](e, e)
    c1 = net.blocks["C1"](e, e * c0)  # product of the two active inputs, nothing else
    d1 = net.blocks["D1"](e, e)
    expected = net.output(c1 * d1).squeeze(-1)
    torch.testing.assert_close(net(x), expected)
    derived = FusionNetwork.from_genotype(net.genotype(), N, F, "hard")
    derived.load_state_dict(supernet_state_for(derived, net.state_dict()))
    torch.testing.assert_close(derived(x), expected)


def test_nodes_without_active_input_output_zeros_and_are_pruned():
    net = supernet(4)
    graph = net.graph
    alpha = torch.full((33,), -1.0)
    # D1 has no active input; its edge to OUT is active but must carry nothing (PROD at OUT).
    for edge in [("E", "C1"), ("C1", "OUT"), ("D1", "OUT"), ("D1", "C2")]:
        alpha[graph.edges.index(edge)] = 1.0
    set_arch(net, alpha, [OPERATIONS.index("prod")] * 7)
    x = ids(7)
    e = net.embedding.table(x).flatten(1)
    expected = net.output(net.blocks["C1"](e, e)).squeeze(-1)
    torch.testing.assert_close(net(x), expected)
    genotype = net.genotype()
    assert ("D1", "OUT") in genotype.edges and ("D1", "OUT") not in genotype.live_edges()
    assert genotype.live_blocks() == ("C1",)
    derived = FusionNetwork.from_genotype(genotype, N, F, "hard")
    assert set(derived.blocks) == {"C1"}
    derived.load_state_dict(supernet_state_for(derived, net.state_dict()))
    torch.testing.assert_close(derived(x), expected)


# ---------------------------------------------------------------- genotype


def searched_genotype(seed=0) -> Genotype:
    net = supernet(seed)
    set_arch(net, random_alpha(net, seed))
    return net.genotype()


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_live_masks_agree_with_live_edges_on_random_edge_sets(layers):
    """The vectorised liveness (used to draw chance wirings) gives live_edges' answer."""
    graph = FusionGraph(layers)
    rng = np.random.default_rng(layers)
    active = rng.random((2000, len(graph.edges))) < rng.random((2000, 1))
    masks = graph.live_masks(active)
    for row, mask in zip(active, masks, strict=True):
        expected = set(graph.live_edges(e for e, on in zip(graph.edges, row, strict=True) if on))
        assert {e for e, on in zip(graph.edges, mask, strict=True) if on} == expected
    assert masks.any() and not masks.all()


def test_genotype_round_trips_through_json(tmp_path):
    genotype = searched_genotype()
    path = genotype.save(tmp_path / "genotype.json")
    loaded = Genotype.load(path)
    assert loaded == genotype
    assert loaded.to_json() == path.read_text()
    assert Genotype.from_dict(json.loads(genotype.to_json())) == genotype
    # Identical inputs give byte-identical files; no paths or times inside.
    assert searched_genotype().to_json() == genotype.to_json()
    assert searched_genotype(1).to_json() != genotype.to_json()
    text = str(genotype)
    assert text.splitlines()[0].startswith("Genotype v1: 3 layers, shallow=cross, F=5, D=3")
    assert "OUT <-" in text


def other_operation(data: dict, index: int) -> str:
    return next(op for op in data["operations"] if op != data["nodes"][index]["operation"])


def switch_off_first_active_edge(data: dict) -> None:
    src, dst = data["edges"][0]
    index = list(data["alpha_by_edge"]).index(f"{src}->{dst}")
    data["alpha"][index] = data["alpha_by_edge"][f"{src}->{dst}"] = -0.5


def test_genotype_files_key_alpha_by_edge_and_older_files_still_load():
    genotype = searched_genotype()
    data = genotype.to_dict()
    graph = genotype.graph
    assert list(data["alpha_by_edge"]) == [f"{s}->{d}" for s, d in graph.edges]
    assert data["alpha_by_edge"]["C1->OUT"] == genotype.alpha[graph.edges.index(("C1", "OUT"))]
    del data["alpha_by_edge"]  # a file written before alpha was keyed by edge
    assert Genotype.from_dict(data) == genotype


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(shallow="mlp"), "shallow block 'mlp'"),
        (lambda d: d.update(operations=["add", "max", "concat", "att"]), "unknown fusion op"),
        (lambda d: d.update(alpha=d["alpha"][:-1]), "32 alpha values for 33"),
        (lambda d: d["edges"].append(["OUT", "E"]), "not in the 3-layer graph"),
        (lambda d: d["beta"].pop(), "beta must have 7 rows"),
        (lambda d: d.pop("nodes"), "missing \\['nodes'\\]"),
        (lambda d: d.update(format="other"), "not an optfusion-genotype"),
        (lambda d: d.update(num_fields=0), "num_fields must be a positive integer"),
        (lambda d: d["nodes"][0].update(operation="max"), "node C1"),
        (lambda d: d["edges"].pop(), "edges with alpha > 0 that are not active: "),
        (lambda d: d["edges"].reverse(), "listed once each, in graph order"),
        (lambda d: d["nodes"][0].update(operation=other_operation(d, 0)),
         "node C1: operation '.*' is not the argmax of its beta"),
        (lambda d: d["nodes"][1]["weights"].reverse(), "node D1: weights .* are not softmax"),
        (lambda d: d["alpha_by_edge"].update({"E->C0": 7.0}),
         "alpha_by_edge and alpha disagree on E->C0 \\(7.0 vs"),
        (lambda d: d["alpha_by_edge"].pop("C0->C1"), "alpha_by_edge .* lacks \\['C0->C1'\\]"),
        (lambda d: switch_off_first_active_edge(d), "active edges with alpha <= 0: "),
    ],
)
def test_malformed_genotypes_are_rejected(change, message):
    data = searched_genotype().to_dict()
    change(data)
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(data)


def test_genotype_without_active_out_input_is_an_error():
    net = supernet()
    alpha = torch.ones(33)
    alpha[net.graph.edge_slice("OUT")] = -1.0
    set_arch(net, alpha)
    with pytest.raises(ValueError, match="OUT has no active input"):
        net.genotype()


def test_genotype_for_other_data_is_an_error(tmp_path):
    genotype = searched_genotype()
    with pytest.raises(ValueError, match="searched on data with 5 fields; this data has 6"):
        FusionNetwork.from_genotype(genotype, N, 6)
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a JSON genotype"):
        Genotype.load(path)


def test_warm_start_from_other_sizes_is_an_error():
    genotype = searched_genotype()
    derived = FusionNetwork.from_genotype(genotype, N + 5, F, "hard")
    with pytest.raises(ValueError, match="warm start: embedding.table.weight has shape"):
        supernet_state_for(derived, supernet().state_dict())


def test_unknown_mode_and_config_values():
    with pytest.raises(ValueError, match="unknown mode"):
        FusionNetwork(N, F, SupernetConfig(), mode="magic")
    with pytest.raises(ValueError, match="unknown shallow block"):
        SupernetConfig(shallow="mlp")
    with pytest.raises(ValueError, match="unknown fusion operation"):
        SupernetConfig(operations=("add", "max"))


def test_single_operation_search_has_a_trivial_beta():
    net = supernet(operations=("prod",))
    assert net.beta.shape == (7, 1)
    assert torch.all(net.operation_weights() == 1)
    assert all(n.operation == "prod" for n in net.genotype().nodes)


def test_low_rank_attention_option_is_cheaper_and_derives_exactly():
    def count(ops):
        net = FusionNetwork(N, F, SupernetConfig(embed_dim=20, operations=ops))  # d = 100
        return sum(p.numel() for p in net.parameters())

    assert count(("add", "prod", "concat", "att-lite")) < 0.6 * count(OPERATIONS)
    lite = supernet(0, operations=("add", "prod", "concat", "att-lite"))
    ops = [3] * 7  # att-lite everywhere
    set_arch(lite, random_alpha(lite, 5), ops)
    derived = FusionNetwork.from_genotype(lite.genotype(), N, F, "hard")
    derived.load_state_dict(supernet_state_for(derived, lite.state_dict()))
    torch.testing.assert_close(derived(ids(7)), lite(ids(7)), rtol=1e-5, atol=1e-6)
