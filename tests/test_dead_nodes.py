"""Dead nodes in the search supernet: zero forward, straight-through backward (DESIGN.md section 2).

A node none of whose inputs is active (from a fed node) outputs zeros, but the gradient still
reaches the gates of its inputs as if it were fed, so a switched-off edge can switch back on.

``frozen_forward`` below is a frozen copy of the supernet's forward pass *before* this rule: the
node's ``fed`` flag and the fusion's any-active flag were constants for autograd, so a dead
node's edges received exactly zero gradient. The tests use it twice: where no node is dead the
fix must change nothing (same outputs, same gradients of alpha, beta and every weight), and where
a node is dead it shows what the fix changes. Its operations are the frozen copies of
``tests/frozen_supernet.py``; since the fusion nodes now accumulate their inputs in another
order, "the same" means equal to float32 rounding (``FLOAT32`` there).
"""

from __future__ import annotations

import pytest
import torch
from frozen_supernet import FLOAT32, frozen_fuse
from torch import nn

from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig

F, D, N = 4, 3, 40


def frozen_forward(net: FusionNetwork, x: torch.Tensor) -> torch.Tensor:
    """The search forward pass as it was before dead nodes could revive (do not update)."""
    e = net.embedding(x).flatten(start_dim=1)  # (B, d)
    all_gates = net.edge_gates()  # (num_edges,)
    all_weights = net.operation_weights()  # (fusion nodes, ops)
    one = e.new_ones(())
    h, fed = {"E": e}, {"E": one}
    for node in net.graph.nodes[1:]:
        sources = net.inputs[node]
        from_fed = torch.stack([fed[s] for s in sources])  # (k,) constants
        gates = all_gates[net.graph.edge_slice(node)] * from_fed  # (k,)
        fed[node] = (gates.detach() > 0).any().to(e.dtype)  # a constant for autograd
        if node == "C0":
            fused = gates[0] * e
        else:
            g = gates.to(e.dtype)
            gated = torch.stack([h[s] for s in sources]) * g.view(-1, 1, 1)  # (k, B, d)
            any_active = (g.detach() != 0).any().to(e.dtype)  # a constant for autograd
            weights = all_weights[net.graph.fusion_nodes.index(node)]
            out = 0
            for w, (name, op) in zip(weights, net.fusions[node].ops.items(), strict=True):
                out = out + w * frozen_fuse(name, op, gated, g)  # (B, d)
            fused = out * any_active
        if node == "OUT":
            return net.output(fused).squeeze(-1)  # (B,)
        h[node] = net.blocks[node](e, fused) * fed[node]
    raise AssertionError("no OUT node")


def supernet(seed: int, **cfg) -> FusionNetwork:
    torch.manual_seed(seed)
    return FusionNetwork(N, F, SupernetConfig(embed_dim=D, **cfg))


def batch(size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N, (size, F), generator=generator)
    y = torch.randint(0, 2, (size,), generator=generator).float()
    return x, y


def gradients(net: FusionNetwork, forward, x, y) -> dict[str, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    nn.functional.binary_cross_entropy_with_logits(forward(x), y).backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def alpha_with_every_node_fed(net: FusionNetwork, seed: int) -> torch.Tensor:
    """Random alpha, many edges off, but every node keeps its edge from E (so none is dead)."""
    alpha = torch.randn(len(net.graph.edges), generator=torch.Generator().manual_seed(seed))
    for node in net.graph.nodes[1:]:
        alpha[net.graph.edges.index(("E", node))] = 0.3
    return alpha


def alpha_with_dead_nodes(net: FusionNetwork) -> torch.Tensor:
    """D1 and C2 dead (every input off), yet both feed OUT through active edges."""
    graph = net.graph
    alpha = torch.full((len(graph.edges),), 0.4)
    for node in ("D1", "C2"):
        alpha[graph.edge_slice(node)] = -0.4
    return alpha


@pytest.mark.parametrize("shallow", ["cross", "crossv2", "cin"])
@pytest.mark.parametrize("seed", range(3))
def test_gradients_equal_the_old_forward_where_no_node_is_dead(shallow, seed):
    net = supernet(seed, shallow=shallow)
    with torch.no_grad():
        net.alpha.copy_(alpha_with_every_node_fed(net, seed))
    assert (net.alpha < 0).sum() >= 8  # many edges are off: the gates matter
    x, y = batch(seed=seed)
    torch.testing.assert_close(net(x), frozen_forward(net, x), **FLOAT32)
    new, old = gradients(net, net, x, y), gradients(net, lambda v: frozen_forward(net, v), x, y)
    assert new.keys() == old.keys() and {"alpha", "beta"} <= new.keys()
    for name in new:
        torch.testing.assert_close(new[name], old[name], **FLOAT32, msg=name)


def test_dead_nodes_output_zeros_and_pass_gradient_to_their_gates():
    net = supernet(0)
    with torch.no_grad():
        net.alpha.copy_(alpha_with_dead_nodes(net))
    x, y = batch()
    torch.testing.assert_close(net(x), frozen_forward(net, x), **FLOAT32)  # same forward
    new, old = gradients(net, net, x, y), gradients(net, lambda v: frozen_forward(net, v), x, y)
    graph = net.graph
    for node in ("D1", "C2"):
        inputs = graph.edge_slice(node)
        assert torch.all(old["alpha"][inputs] == 0)  # before: a dead node's edges were frozen
        assert torch.all(new["alpha"][inputs] != 0)  # now every input edge of it can move
    alive = [i for i, (_, dst) in enumerate(graph.edges) if dst not in ("D1", "C2")]
    assert torch.all(new["alpha"][alive] != 0)


# ---------------------------------------------------------------- a planted revival

PLANTED_FIELDS, PLANTED_VALUES = 3, 10
REVIVAL_STEPS = 10  # the bound the revival must meet (observed: 3 or 4 steps, alpha from -0.3)


def planted_supernet(seed: int):
    """A one-layer supernet that has learned a planted linear click model through E -> D1 -> OUT,
    and a batch sampler of that model. Only E->C0, E->D1 and D1->OUT are on; the rest start off.
    """
    torch.manual_seed(seed)
    num_features = PLANTED_FIELDS * PLANTED_VALUES
    net = FusionNetwork(num_features, PLANTED_FIELDS, SupernetConfig(embed_dim=4, num_layers=1))
    graph = net.graph
    with torch.no_grad():
        net.alpha.fill_(-0.5)
        for edge in [("E", "C0"), ("E", "D1"), ("D1", "OUT")]:
            net.alpha[graph.edges.index(edge)] = 0.5
    generator = torch.Generator().manual_seed(100 + seed)
    effect = torch.randn(num_features, generator=generator)  # planted effect of every value
    offsets = torch.arange(PLANTED_FIELDS) * PLANTED_VALUES

    def sample(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, PLANTED_VALUES, (size, PLANTED_FIELDS), generator=generator)
        x = x + offsets  # (B, F) global ids
        return x, (effect[x].sum(dim=1) > 0).float()

    weights = torch.optim.Adam(net.weight_parameters(), lr=1e-2)
    for _ in range(80):  # the weights learn the planted model; alpha stays put
        x, y = sample()
        weights.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        weights.step()
    return net, sample, weights


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("forward", ["supernet", "frozen"])
def test_a_pruned_informative_node_revives_and_an_unread_dead_node_stays_off(seed, forward):
    """One bad step prunes D1 (OUT's only active input): E->D1 goes to -0.3, so D1 is dead, OUT
    has no live input and the logit is a constant. Joint steps (arch_lr 0.1) must switch D1's
    inputs back on within REVIVAL_STEPS steps. C1 starts dead too, but nothing reads it (C1->OUT
    is off): it is uninformative and must stay off. The frozen old forward never revives D1."""
    net, sample, weights = planted_supernet(seed)
    graph = net.graph
    with torch.no_grad():
        net.alpha[graph.edges.index(("E", "D1"))] = -0.3
    run = net if forward == "supernet" else (lambda v: frozen_forward(net, v))
    arch = torch.optim.Adam(net.arch_parameters(), lr=0.1, weight_decay=0.0)
    d1_inputs, c1_inputs = graph.edge_slice("D1"), graph.edge_slice("C1")
    losses, revived_at = [], None
    for step in range(1, REVIVAL_STEPS + 1):
        x, y = sample()
        loss = nn.functional.binary_cross_entropy_with_logits(run(x), y)
        weights.zero_grad()
        arch.zero_grad()
        loss.backward()
        weights.step()
        arch.step()
        losses.append(loss.item())
        if revived_at is None and (net.alpha[d1_inputs] > 0).any():
            revived_at = step
        assert (net.alpha[c1_inputs] < 0).all(), f"C1 switched on at step {step}"
    if forward == "frozen":
        assert revived_at is None and net.alpha[graph.edges.index(("E", "D1"))] == -0.3
        return
    assert revived_at is not None, f"D1 still dead after {REVIVAL_STEPS} steps"
    x, y = sample(2048)
    with torch.no_grad():
        after = nn.functional.binary_cross_entropy_with_logits(net(x), y).item()
    assert after < 0.5 * losses[0]  # the revived node predicts again (dead: a constant logit)
