"""Fusion operations, the mixed node and the straight-through gate, against their definitions."""

import pytest
import torch

from optfusion_lab.fusion import (
    OPERATIONS,
    AttentionFusion,
    ConcatFusion,
    MixedFusion,
    StraightThroughGate,
    build_operation,
    straight_through_gate,
)

K, DIM = 3, 6
BATCHES = [1, 7]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _inputs(batch: int = 7) -> torch.Tensor:
    return torch.randn(K, batch, DIM)


def test_operation_order_and_names():
    assert OPERATIONS == ("add", "prod", "concat", "att")
    for name in OPERATIONS:
        assert build_operation(name, K, DIM).num_inputs == K


def test_unknown_operation_raises():
    with pytest.raises(ValueError, match="add, prod, concat, att"):
        build_operation("max", K, DIM)
    with pytest.raises(ValueError, match="valid choices"):
        MixedFusion(K, DIM, operations=("add", "mean"))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", OPERATIONS)
def test_shapes_and_list_inputs(batch, name):
    op = build_operation(name, K, DIM)
    x = _inputs(batch)
    gates = torch.tensor([1.0, 0.0, 1.0])
    out = op(x, gates)
    assert out.shape == (batch, DIM)
    torch.testing.assert_close(op(list(x), gates), out)


@pytest.mark.parametrize("name", OPERATIONS)
def test_wrong_shapes_raise(name):
    op = build_operation(name, K, DIM)
    with pytest.raises(ValueError):
        op(torch.randn(K + 1, 2, DIM), torch.ones(K + 1))
    with pytest.raises(ValueError):
        op(torch.randn(K, 2, DIM), torch.ones(K + 1))


def test_add():
    x = _inputs()
    op = build_operation("add", K, DIM)
    torch.testing.assert_close(op(x, torch.ones(K)), x[0] + x[1] + x[2])
    torch.testing.assert_close(op(x, torch.tensor([1.0, 0.0, 1.0])), x[0] + x[2])


def test_prod_all_active():
    x = _inputs()
    op = build_operation("prod", K, DIM)
    torch.testing.assert_close(op(x, torch.ones(K)), x[0] * x[1] * x[2])


@pytest.mark.parametrize(
    ("gates", "active"),
    [([1.0, 0.0, 1.0], [0, 2]), ([0.0, 1.0, 0.0], [1]), ([0.0, 1.0, 1.0], [1, 2])],
)
def test_prod_uses_active_inputs_only(gates, active):
    x = _inputs()
    op = build_operation("prod", K, DIM)
    expected = torch.ones_like(x[0])
    for j in active:
        expected = expected * x[j]
    torch.testing.assert_close(op(x, torch.tensor(gates)), expected)


def test_concat():
    x = _inputs()
    op = build_operation("concat", K, DIM)
    assert isinstance(op, ConcatFusion)
    W, b = op.linear.weight, op.linear.bias  # (d, k*d), (d,)
    gates = torch.tensor([1.0, 0.0, 1.0])
    expected = b + sum(gates[j] * x[j] @ W[:, j * DIM : (j + 1) * DIM].T for j in range(K))
    torch.testing.assert_close(op(x, gates), expected)


def test_attention():
    x = _inputs()
    op = build_operation("att", K, DIM)
    assert isinstance(op, AttentionFusion)
    gates = torch.tensor([1.0, 1.0, 0.0])
    expected = torch.zeros(7, DIM)
    for j in range(K):  # input j's net: w1[j] (h, d), b1[j] (h,), w2[j] (d, h)
        xj = gates[j] * x[j]
        hidden = torch.relu(xj @ op.w1[j].T + op.b1[j])
        a_j = torch.softmax(hidden @ op.w2[j].T, dim=-1)  # softmax over the d features
        expected = expected + a_j * xj
    torch.testing.assert_close(op(x, gates), expected)
    assert {name for name, _ in op.named_parameters()} == {"w1", "b1", "w2"}  # W2 has no bias
    assert sum(p.numel() for p in op.parameters()) == K * (2 * DIM * DIM + DIM)


@pytest.mark.parametrize("name", OPERATIONS)
def test_no_active_input_gives_zeros(name):
    op = build_operation(name, K, DIM)
    out = op(_inputs(), torch.zeros(K))
    assert torch.equal(out, torch.zeros(7, DIM))


def test_mixed_with_no_active_input_gives_zeros():
    mixed = MixedFusion(K, DIM)
    out = mixed(_inputs(), torch.zeros(K), torch.softmax(torch.randn(4), dim=0))
    assert torch.equal(out, torch.zeros(7, DIM))


@pytest.mark.parametrize("index", range(len(OPERATIONS)))
def test_mixed_with_one_hot_weights_equals_single_op(index):
    mixed = MixedFusion(K, DIM)
    x, gates = _inputs(), torch.tensor([1.0, 0.0, 1.0])
    weights = torch.nn.functional.one_hot(torch.tensor(index), len(OPERATIONS)).float()
    single = mixed.ops[OPERATIONS[index]]
    torch.testing.assert_close(mixed(x, gates, weights), single(x, gates))


@pytest.mark.parametrize("batch", BATCHES)
def test_mixed_is_weighted_sum(batch):
    mixed = MixedFusion(K, DIM)
    x, gates = _inputs(batch), torch.tensor([0.0, 1.0, 1.0])
    weights = torch.softmax(torch.randn(4), dim=0)
    expected = sum(
        w * mixed.ops[name](x, gates) for w, name in zip(weights, OPERATIONS, strict=True)
    )
    out = mixed(x, gates, weights)
    assert out.shape == (batch, DIM)
    torch.testing.assert_close(out, expected)


def test_mixed_subset_of_operations():
    mixed = MixedFusion(K, DIM, operations=("prod", "add"))
    x, gates = _inputs(), torch.ones(K)
    out = mixed(x, gates, torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(out, 0.25 * x.prod(dim=0) + 0.75 * x.sum(dim=0))
    with pytest.raises(ValueError):
        mixed(x, gates, torch.ones(4))
    with pytest.raises(ValueError):
        MixedFusion(K, DIM, operations=("add", "add"))


def test_straight_through_gate_forward_is_hard():
    alpha = torch.tensor([0.5, -0.2, 0.0, 1e-3, 3.7])
    gates = straight_through_gate(alpha)
    assert torch.equal(gates, torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(StraightThroughGate.apply(alpha), gates)


def test_straight_through_gate_backward_is_identity():
    alpha = torch.tensor([0.5, -0.2, 0.3], requires_grad=True)
    upstream = torch.tensor([2.0, -3.0, 0.7])
    (straight_through_gate(alpha) * upstream).sum().backward()
    assert torch.equal(alpha.grad, upstream)


@pytest.mark.parametrize("name", OPERATIONS)
def test_gradient_reaches_alpha_through_ops(name):
    alpha = torch.tensor([0.5, -0.5, 0.5], requires_grad=True)
    op = build_operation(name, K, DIM)
    op(_inputs(), straight_through_gate(alpha)).sum().backward()
    assert alpha.grad is not None
    assert alpha.grad[0] != 0  # an active input's gate gets a gradient
    assert alpha.grad[1] != 0  # so does an inactive one: it can be switched back on
