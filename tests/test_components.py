"""Components: shapes at batch 1 and 7, and closed-form checks against explicit loops."""

import pytest
import torch

from optfusion_lab.components import (
    CIN,
    MLP,
    CINLayer,
    CrossLayerV1,
    CrossLayerV2,
    CrossNetV1,
    CrossNetV2,
    FeatureEmbedding,
    FirstOrderTerm,
    FMInteraction,
    InnerProduct,
)

F, D = 5, 3
DIM = F * D
BATCHES = [1, 7]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ids(batch: int, num_features: int = 50) -> torch.Tensor:
    return torch.randint(0, num_features, (batch, F))


# --- embedding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
def test_feature_embedding_shape_and_lookup(batch):
    emb = FeatureEmbedding(50, D)
    ids = _ids(batch)
    out = emb(ids)
    assert out.shape == (batch, F, D)
    assert torch.equal(out[0, 1], emb.table.weight[ids[0, 1]])
    assert len(list(emb.parameters())) == 1  # one shared table


def test_feature_embedding_init_std():
    emb = FeatureEmbedding(20_000, 8, init_std=0.01)
    assert abs(emb.table.weight.std().item() - 0.01) < 1e-3
    assert abs(emb.table.weight.mean().item()) < 1e-3


@pytest.mark.parametrize("batch", BATCHES)
def test_first_order_term(batch):
    lin = FirstOrderTerm(50)
    with torch.no_grad():
        lin.bias.fill_(0.5)
    ids = _ids(batch)
    out = lin(ids)
    assert out.shape == (batch, 1)
    w = lin.weight.table.weight[:, 0]
    expected = torch.stack([w[row].sum() + 0.5 for row in ids]).unsqueeze(-1)
    torch.testing.assert_close(out, expected)


# --- MLP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("output_dim", [None, 1])
def test_mlp_shape(batch, output_dim):
    mlp = MLP(DIM, (8, 6), dropout=0.1, batch_norm=True, output_dim=output_dim).eval()
    out = mlp(torch.randn(batch, DIM))
    expected_width = 6 if output_dim is None else output_dim
    assert mlp.output_dim == expected_width
    assert out.shape == (batch, expected_width)


def test_mlp_formula():
    mlp = MLP(4, (3,), output_dim=2)
    x = torch.randn(5, 4)
    hidden, final = mlp.layers[0], mlp.layers[-1]
    expected = final(torch.relu(x @ hidden.weight.T + hidden.bias))
    torch.testing.assert_close(mlp(x), expected)


def test_mlp_without_layers_is_identity():
    mlp = MLP(4, ())
    x = torch.randn(2, 4)
    assert mlp.output_dim == 4
    assert torch.equal(mlp(x), x)


# --- cross networks ---------------------------------------------------------------------------


def _randomise(module: torch.nn.Module) -> None:
    """Give every parameter random values (biases start at zero otherwise)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "net", [lambda: CrossNetV1(DIM, 2), lambda: CrossNetV2(DIM, 2), lambda: CrossNetV2(DIM, 2, 3)]
)
def test_cross_net_shapes(batch, net):
    assert net()(torch.randn(batch, DIM)).shape == (batch, DIM)


def test_cross_layer_v1_formula():
    layer = CrossLayerV1(DIM)
    _randomise(layer)
    x0, x = torch.randn(7, DIM), torch.randn(7, DIM)
    w, b = layer.w.weight[0], layer.b
    expected = torch.stack([x0[i] * torch.dot(x[i], w) + b + x[i] for i in range(7)])
    torch.testing.assert_close(layer(x0, x), expected)


def test_cross_net_v1_chains_from_x0():
    net = CrossNetV1(DIM, 3)
    _randomise(net)
    x0 = torch.randn(7, DIM)
    x = x0
    for layer in net.layers:
        w, b = layer.w.weight[0], layer.b
        x = x0 * (x @ w).unsqueeze(-1) + b + x
    torch.testing.assert_close(net(x0), x)


def test_cross_layer_v2_full_rank_formula():
    layer = CrossLayerV2(DIM)
    _randomise(layer)
    x0, x = torch.randn(7, DIM), torch.randn(7, DIM)
    W, b = layer.linear.weight, layer.linear.bias
    expected = torch.stack([x0[i] * (W @ x[i] + b) + x[i] for i in range(7)])
    torch.testing.assert_close(layer(x0, x), expected)


def test_cross_layer_v2_low_rank_formula():
    rank = 2
    layer = CrossLayerV2(DIM, low_rank=rank)
    _randomise(layer)
    V = layer.linear[0].weight.T  # (d, r)
    U = layer.linear[1].weight  # (d, r)
    b = layer.linear[1].bias
    assert U.shape == V.shape == (DIM, rank)
    W = U @ V.T
    x0, x = torch.randn(7, DIM), torch.randn(7, DIM)
    expected = torch.stack([x0[i] * (W @ x[i] + b) + x[i] for i in range(7)])
    torch.testing.assert_close(layer(x0, x), expected)
    assert sum(p.numel() for p in layer.parameters()) == 2 * DIM * rank + DIM


def test_cross_net_v2_chains_from_x0():
    net = CrossNetV2(DIM, 2, low_rank=4)
    _randomise(net)
    x0 = torch.randn(7, DIM)
    x = x0
    for layer in net.layers:
        W = layer.linear[1].weight @ layer.linear[0].weight
        x = x0 * (x @ W.T + layer.linear[1].bias) + x
    torch.testing.assert_close(net(x0), x)


def test_cross_layer_v2_rejects_bad_rank():
    with pytest.raises(ValueError):
        CrossLayerV2(DIM, low_rank=0)


# --- CIN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
def test_cin_layer_shape(batch):
    layer = CINLayer(4, F, 6)
    assert layer(torch.randn(batch, F, D), torch.randn(batch, 4, D)).shape == (batch, 6, D)


def test_cin_layer_against_loop():
    hidden, out_size = 4, 6
    layer = CINLayer(hidden, F, out_size)
    _randomise(layer)
    x0, x = torch.randn(7, F, D), torch.randn(7, hidden, D)
    W = layer.conv.weight[:, :, 0].reshape(out_size, hidden, F)
    bias = layer.conv.bias
    expected = torch.zeros(7, out_size, D)
    for o in range(out_size):
        expected[:, o, :] = bias[o]
        for h in range(hidden):
            for f in range(F):
                expected[:, o, :] += W[o, h, f] * x[:, h, :] * x0[:, f, :]
    torch.testing.assert_close(layer(x0, x), expected)


@pytest.mark.parametrize("batch", BATCHES)
def test_cin_shape(batch):
    cin = CIN(F, (4, 6, 5))
    assert cin.output_dim == 15
    assert cin(torch.randn(batch, F, D)).shape == (batch, 15)
    halved = CIN(F, (4, 6, 5), split_half=True)
    assert halved.output_dim == 2 + 3 + 5
    assert halved(torch.randn(batch, F, D)).shape == (batch, 10)


def test_cin_is_sum_pooled_concat_of_layers():
    cin = CIN(F, (4, 3))
    _randomise(cin)
    x0 = torch.randn(7, F, D)
    h1 = cin.layers[0](x0, x0)
    h2 = cin.layers[1](x0, h1)
    expected = torch.cat([h1.sum(dim=-1), h2.sum(dim=-1)], dim=1)
    torch.testing.assert_close(cin(x0), expected)


def test_cin_split_half():
    cin = CIN(F, (4, 3), split_half=True)
    _randomise(cin)
    x0 = torch.randn(7, F, D)
    h1 = cin.layers[0](x0, x0)
    h2 = cin.layers[1](x0, h1[:, :2])  # the first half goes on
    expected = torch.cat([h1[:, 2:].sum(dim=-1), h2.sum(dim=-1)], dim=1)  # the second half out
    torch.testing.assert_close(cin(x0), expected)
    with pytest.raises(ValueError):
        CIN(F, (3, 4), split_half=True)


# --- FM and inner products ------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
def test_fm_identity_against_pairwise_loop(batch):
    v = torch.randn(batch, F, D)
    expected = torch.zeros(batch, 1)
    for i in range(F):
        for j in range(i + 1, F):
            expected[:, 0] += (v[:, i] * v[:, j]).sum(dim=-1)
    out = FMInteraction()(v)
    assert out.shape == (batch, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("batch", BATCHES)
def test_inner_product_against_double_loop(batch):
    v = torch.randn(batch, F, D)
    expected = torch.stack(
        [(v[:, i] * v[:, j]).sum(dim=-1) for i in range(F) for j in range(i + 1, F)], dim=1
    )
    ip = InnerProduct(F)
    out = ip(v)
    assert out.shape == (batch, F * (F - 1) // 2) == (batch, ip.output_dim)
    torch.testing.assert_close(out, expected)
    assert len(list(ip.parameters())) == 0
    assert {name for name, _ in ip.named_buffers()} == {"pair_index"}
