"""The supernet's fusion code against a frozen copy of it (``tests/frozen_supernet.py``).

The fusion nodes are implemented for speed (accumulating the gated inputs instead of stacking
them, the attention nets of ATT batched into one matmul); this must not change what they
compute. On a fixed batch, the outputs and the gradients of alpha, beta and every weight must
equal those of the frozen code, for every operation alone and mixed, with edges gated off, with
dead nodes, for every shallow block, in every mode.

Tolerances (``FLOAT64``, ``FLOAT32`` in ``frozen_supernet.py``): float64 ``rtol=1e-10,
atol=1e-12`` (the same formulas, summed in another order); float32 ``rtol=1e-4, atol=1e-6`` (the
same in single precision; the logits and gradients are of order 1e-3 to 1).
"""

from __future__ import annotations

import pytest
import torch
from frozen_supernet import (
    FLOAT32,
    FLOAT64,
    attention_nets,
    frozen_attention_nets,
    frozen_forward,
    frozen_mixed,
    frozen_operation,
)
from torch import nn

from optfusion_lab.fusion import (
    OPERATIONS,
    MixedFusion,
    build_operation,
    gated,
    stack_attention_nets,
    straight_through_gate,
)
from optfusion_lab.models.genotype import FusionGraph, parallel_edges
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig, supernet_state_for

F, D, N = 4, 3, 40
TOLERANCES = {torch.float64: FLOAT64, torch.float32: FLOAT32}
OPERATION_SETS = {
    "add": ("add",),
    "prod": ("prod",),
    "concat": ("concat",),
    "att": ("att",),
    "att-lite": ("att-lite",),
    "all": OPERATIONS,
    "all-lite": ("add", "prod", "concat", "att-lite"),
}


def supernet(seed: int, dtype=torch.float64, **kwargs) -> FusionNetwork:
    torch.manual_seed(seed)
    return FusionNetwork(N, F, SupernetConfig(embed_dim=D, **kwargs)).to(dtype)


def batch(size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N, (size, F), generator=generator)
    y = torch.randint(0, 2, (size,), generator=generator)
    return x, y


def set_alpha(net: FusionNetwork, arch: str, seed: int) -> None:
    """"on": every edge on; "gated-off": random alpha, every node keeps its edge from E (none is
    dead); "dead": D1 and C2 have every input off, yet feed OUT through active edges."""
    graph = net.graph
    alpha = torch.full((len(graph.edges),), 0.5)
    if arch == "gated-off":
        alpha = torch.randn(len(graph.edges), generator=torch.Generator().manual_seed(seed))
        for node in graph.nodes[1:]:
            alpha[graph.edges.index(("E", node))] = 0.3
    elif arch == "dead":
        alpha.fill_(0.4)
        for node in ("D1", "C2"):
            alpha[graph.edge_slice(node)] = -0.4
    with torch.no_grad():
        net.alpha.copy_(alpha)


def outputs_and_gradients(net: nn.Module, forward, x, y) -> tuple[torch.Tensor, dict]:
    net.zero_grad(set_to_none=True)
    logits = forward(x)
    nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype)).backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def assert_same(net: nn.Module, x, y, dtype) -> dict:
    new_out, new = outputs_and_gradients(net, net, x, y)
    old_out, old = outputs_and_gradients(net, lambda v: frozen_forward(net, v), x, y)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(new_out, old_out, **tol)
    assert new.keys() == old.keys()
    for name in new:
        torch.testing.assert_close(new[name], old[name], **tol, msg=lambda m, n=name: f"{n}: {m}")
    return new


@pytest.fixture(params=["skipping", "multiplying"])
def gating(request, monkeypatch):
    """Both ways the fused nodes apply 0/1 coefficients (``gated._flags``): skipping inactive
    inputs, with an active input as its own PROD factor (CPU), and multiplying by the
    coefficients (CUDA, torch.compile)."""
    if request.param == "multiplying":
        monkeypatch.setattr(gated, "_flags", lambda coeffs: None)
    else:
        assert gated._flags(torch.tensor([1.0, 0.0])) == [True, False]
    return request.param


@pytest.mark.parametrize("arch", ["on", "gated-off", "dead"])
@pytest.mark.parametrize(("ops", "dtype"), [*((ops, torch.float64) for ops in OPERATION_SETS),
                                             ("all", torch.float32), ("all-lite", torch.float32)])
@pytest.mark.parametrize("shallow", ["cross", "crossv2", "cin"])
def test_search_supernet_equals_the_frozen_code(shallow, ops, arch, dtype, gating):
    seed = len(ops) + len(arch)
    net = supernet(seed, dtype, shallow=shallow, operations=OPERATION_SETS[ops])
    set_alpha(net, arch, seed)
    if arch != "on":
        assert (net.alpha < 0).sum() >= 6  # many edges are off: the gates matter
    x, y = batch(seed=seed)
    grads = assert_same(net, x, y, dtype)
    assert {"alpha", "beta"} <= grads.keys()
    assert grads["alpha"].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fixed_edges_and_a_fixed_operation_equal_the_frozen_code(dtype):
    torch.manual_seed(3)
    net = FusionNetwork(N, F, SupernetConfig(embed_dim=D), mode="fixed-edges",
                        edges=parallel_edges(FusionGraph(3)))
    net = net.to(dtype)
    x, y = batch(seed=3)
    assert_same(net, x, y, dtype)
    search = supernet(4, dtype)
    set_alpha(search, "gated-off", 4)
    search.fix_operation("prod")
    assert "beta" not in assert_same(search, x, y, dtype)


@pytest.mark.parametrize("selection", ["hard", "soft"])
@pytest.mark.parametrize("shallow", ["cross", "cin"])
def test_derived_models_equal_the_frozen_code(selection, shallow):
    search = supernet(5, shallow=shallow)
    set_alpha(search, "gated-off", 5)
    with torch.no_grad():
        search.beta.normal_(generator=torch.Generator().manual_seed(5))
    genotype = search.genotype()
    torch.manual_seed(6)
    derived = FusionNetwork.from_genotype(genotype, N, F, selection).double()
    assert {n.operation for n in genotype.nodes} - {"add", "prod"}  # a matmul op is live
    x, y = batch(seed=5)
    assert_same(derived, x, y, torch.float64)


@pytest.mark.parametrize("name", [*OPERATIONS, "att-lite"])
@pytest.mark.parametrize("fed", [None, (1.0, 0.0, 1.0), (0.0, 0.0, 0.0)])
def test_single_operations_and_the_mixed_node_equal_the_frozen_code(name, fed, gating):
    torch.manual_seed(7)
    k, dim = 3, 6
    op = build_operation(name, k, dim).double()
    attention = "att-lite" if name == "att-lite" else "att"
    mixed = MixedFusion(k, dim, ("add", "prod", "concat", attention)).double()
    x = torch.randn(k, 5, dim, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.5, -0.5, 0.2], dtype=torch.float64, requires_grad=True)
    beta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    sources_fed = None if fed is None else torch.tensor(fed, dtype=torch.float64)
    upstream = torch.randn(5, dim, dtype=torch.float64)
    cases = [
        (op, lambda: op(list(x), straight_through_gate(alpha), sources_fed),
         lambda: frozen_operation(name, op, x, straight_through_gate(alpha), sources_fed)),
        (mixed, lambda: mixed(x, straight_through_gate(alpha), beta.softmax(0), sources_fed),
         lambda: frozen_mixed(mixed, x, straight_through_gate(alpha), beta.softmax(0),
                              sources_fed)),
    ]
    for module, new, old in cases:
        results = []
        for forward in (new, old):
            module.zero_grad(set_to_none=True)
            x.grad = alpha.grad = beta.grad = None
            out = forward()
            (out * upstream).sum().backward()
            grads = {n: p.grad.clone() for n, p in module.named_parameters()}
            grads.update(x=x.grad.clone(), alpha=alpha.grad.clone())
            if beta.grad is not None:
                grads["beta"] = beta.grad.clone()
            results.append((out.detach(), grads))
        (new_out, new_grads), (old_out, old_grads) = results
        torch.testing.assert_close(new_out, old_out, **TOLERANCES[torch.float64])
        assert new_grads.keys() == old_grads.keys()
        for key in new_grads:
            torch.testing.assert_close(new_grads[key], old_grads[key],
                                       **TOLERANCES[torch.float64], msg=key)


@pytest.mark.parametrize("name", ["att", "att-lite"])
def test_stacked_attention_nets_start_from_the_per_input_nets_draws(name):
    torch.manual_seed(8)
    op = build_operation(name, 3, 40)
    torch.manual_seed(8)
    old = frozen_attention_nets(3, 40, op.hidden)
    for (w1, b1, w2), net in zip(attention_nets(op), old, strict=True):
        assert torch.equal(w1, net[0].weight) and torch.equal(b1, net[0].bias)
        assert torch.equal(w2, net[2].weight) and net[2].bias is None


def old_state_dict(net: FusionNetwork) -> dict:
    """``net``'s state dict in the old layout: ATT as per-input nets ``attention.<j>.{0,2}``."""
    state = {}
    for key, value in net.state_dict().items():
        head, _, name = key.rpartition(".")
        layer = {"w1": "0.weight", "b1": "0.bias", "w2": "2.weight"}.get(name)
        if layer is None:
            state[key] = value
            continue
        for j, row in enumerate(value):
            state[f"{head}.attention.{j}.{layer}"] = row.clone()
    return state


def test_state_dicts_with_per_input_attention_nets_still_load():
    net = supernet(9, operations=("add", "att", "att-lite"))
    set_alpha(net, "gated-off", 9)
    old = old_state_dict(net)
    assert any(".attention.3.0.weight" in key for key in old)
    fresh = supernet(10, operations=("add", "att", "att-lite"))
    fresh.load_state_dict(old)
    x, _ = batch(seed=9)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
    assert stack_attention_nets(dict(old)).keys() == net.state_dict().keys()
    derived = FusionNetwork.from_genotype(net.genotype(), N, F, "soft").double()
    assert {"att", "att-lite"} <= {op for ops in derived.operations.values() for op in ops}
    new_warm = supernet_state_for(derived, net.state_dict())
    old_warm = supernet_state_for(derived, old)
    assert new_warm.keys() == old_warm.keys()
    for key in new_warm:
        assert torch.equal(new_warm[key], old_warm[key]), key
