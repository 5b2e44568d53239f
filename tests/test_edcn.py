"""EDCN against the paper's equations: bridge functions, field-wise regulation, the whole forward.

Chen et al., CIKM 2021. Every expected value below is written from the equations, by hand
(explicit exponentials, per-field loops, plain matrix products), not by calling the module under
test on another input.
"""

import dataclasses

import pytest
import torch

from optfusion_lab.components.sharing import BRIDGES, FieldRegulation, build_bridge
from optfusion_lab.models import EDCN, ModelConfig
from optfusion_lab.models.config import BRIDGE_NAMES

NUM_FEATURES, F, D = 40, 4, 3
d = F * D
SMALL = ModelConfig(embed_dim=D, mlp_dims=(8, 6), cross_layers=2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ids(batch: int) -> torch.Tensor:
    return torch.randint(0, NUM_FEATURES, (batch, F))


def _relu(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v > 0, v, torch.zeros_like(v))


def _softmax_rows(v: torch.Tensor) -> torch.Tensor:
    exp = torch.exp(v - v.max(dim=1, keepdim=True).values)
    return exp / exp.sum(dim=1, keepdim=True)


# --- bridge -----------------------------------------------------------------------------------


def test_bridge_names_agree_with_the_registry():
    assert tuple(BRIDGES) == BRIDGE_NAMES == ("hadamard", "add", "concat", "attention")
    with pytest.raises(ValueError, match="valid bridges: hadamard, add, concat, attention"):
        build_bridge("product", d)
    with pytest.raises(ValueError, match="bridge must be one of"):
        ModelConfig(bridge="product")


@pytest.mark.parametrize("batch", [1, 7])
def test_hadamard_and_add_bridges(batch):
    x, h = torch.randn(batch, d), torch.randn(batch, d)
    expected_product = torch.tensor([[x[b, i] * h[b, i] for i in range(d)] for b in range(batch)])
    torch.testing.assert_close(build_bridge("hadamard", d)(x, h), expected_product)
    torch.testing.assert_close(build_bridge("add", d)(x, h), x + h)


def test_concat_bridge_is_relu_of_a_linear_map_of_both_inputs():
    bridge = build_bridge("concat", d)
    x, h = torch.randn(7, d), torch.randn(7, d)
    w, b = bridge.linear.weight, bridge.linear.bias  # (d, 2d), (d,)
    # W [x; h] = W_x x + W_h h: the first d columns see x, the last d see h
    expected = _relu(x @ w[:, :d].T + h @ w[:, d:].T + b)
    torch.testing.assert_close(bridge(x, h), expected)
    assert (bridge(x, h) >= 0).all()


def test_attention_bridge_pools_each_input_with_its_own_softmax_weights():
    bridge = build_bridge("attention", d)
    x, h = torch.randn(7, d), torch.randn(7, d)

    def weights(net, v):
        return _softmax_rows(_relu(v @ net.hidden.weight.T + net.hidden.bias) @ net.score.weight.T)

    a_x, a_h = weights(bridge.attention_x, x), weights(bridge.attention_h, h)
    torch.testing.assert_close(a_x.sum(dim=1), torch.ones(7))
    torch.testing.assert_close(bridge(x, h), a_x * x + a_h * h)
    assert bridge.attention_x.score.bias is None
    # the two inputs have separate attention nets
    assert (
        bridge.attention_x.hidden.weight.data_ptr() != bridge.attention_h.hidden.weight.data_ptr()
    )


# --- regulation -------------------------------------------------------------------------------


def test_regulation_gate_is_a_softmax_over_fields_with_temperature():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    for tau in (0.5, 1.0, 4.0):
        reg = FieldRegulation(F, D, tau=tau)
        with torch.no_grad():
            reg.gate_logits.copy_(logits)
        exp = torch.exp(logits / tau)
        torch.testing.assert_close(reg.gate(), exp / exp.sum())
    # a higher temperature flattens the gates towards 1/F
    sharp, flat = FieldRegulation(F, D, tau=0.5), FieldRegulation(F, D, tau=4.0)
    with torch.no_grad():
        sharp.gate_logits.copy_(logits)
        flat.gate_logits.copy_(logits)
    assert sharp.gate().max() > flat.gate().max() > 1 / F
    with pytest.raises(ValueError, match="tau must be positive"):
        FieldRegulation(F, D, tau=0.0)


@pytest.mark.parametrize("batch", [1, 7])
def test_regulation_scales_each_field_by_its_gate(batch):
    reg = FieldRegulation(F, D)  # without batch norm the gates are scaled by F
    h = torch.randn(batch, d)
    torch.testing.assert_close(reg(h), h)  # gate_logits start equal: every gate is F * 1/F
    with torch.no_grad():
        reg.gate_logits.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    g = F * reg.gate()
    expected = h.clone()
    for field in range(F):  # field f owns coordinates f*D .. f*D + D - 1 of the flat input
        expected[:, field * D : (field + 1) * D] *= g[field]
    torch.testing.assert_close(reg(h), expected)


def test_regulation_batch_norm_is_one_scalar_standardisation_that_keeps_field_ratios():
    reg = FieldRegulation(F, D, batch_norm=True)
    with torch.no_grad():
        reg.gate_logits.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    h = torch.randn(7, d) * 0.01
    gated = (h.view(7, F, D) * reg.gate().view(1, F, 1)).view(7, d)
    mean, var = gated.mean(), gated.var(unbiased=False)
    expected = (gated - mean) / torch.sqrt(var + reg.norm.eps)  # affine starts at (1, 0)
    out = reg.train()(h)
    torch.testing.assert_close(out, expected)
    assert out.std() > 0.5  # the tiny input comes out at unit scale
    # evaluation uses the running statistics, a cumulative average: after one batch, that batch's
    torch.testing.assert_close(reg.norm.running_mean, mean.view(1))
    torch.testing.assert_close(reg.norm.running_var, gated.var(unbiased=True).view(1))
    eval_out = reg.eval()(h)
    torch.testing.assert_close(
        eval_out, (gated - mean) / torch.sqrt(gated.var(unbiased=True) + reg.norm.eps)
    )


# --- the whole model --------------------------------------------------------------------------


def test_edcn_structure_and_width():
    model = EDCN(NUM_FEATURES, F, SMALL)
    layers = SMALL.cross_layers
    assert len(model.cross_layers) == len(model.deep_layers) == len(model.bridges) == layers
    assert len(model.cross_regulation) == len(model.deep_regulation) == layers
    assert all(deep.output_dim == d for deep in model.deep_layers)
    assert model.head.in_features == 3 * d
    for name, kind in BRIDGES.items():
        edcn = EDCN(NUM_FEATURES, F, dataclasses.replace(SMALL, bridge=name))
        assert all(isinstance(bridge, kind) for bridge in edcn.bridges)
    with pytest.raises(ValueError):
        EDCN(NUM_FEATURES, F, dataclasses.replace(SMALL, cross_layers=0))


def _edcn_by_hand(model: EDCN, ids: torch.Tensor, norm_scale: float) -> torch.Tensor:
    """The paper's forward pass, written from its equations; every regulated tower input is
    multiplied by ``norm_scale``: F without batch norm (gates that start at 1), or what a batch
    norm with fresh statistics does in eval mode."""
    e = model.embedding.table.weight[ids].reshape(len(ids), d)  # (B, F, D) -> (B, d)

    def regulate(reg: FieldRegulation, s: torch.Tensor) -> torch.Tensor:
        exp = torch.exp(reg.gate_logits / reg.tau)
        gate = (exp / exp.sum()).repeat_interleave(D)  # (d,): g_f repeated over field f's D dims
        return s * gate * norm_scale

    shared, x0 = e, None
    for layer in range(len(model.cross_layers)):
        x_in = regulate(model.cross_regulation[layer], shared)
        h_in = regulate(model.deep_regulation[layer], shared)
        x0 = x_in if x0 is None else x0  # x0 = R_c(E) of the first layer
        cross = model.cross_layers[layer]
        x = x0 * (x_in @ cross.w.weight[0]).unsqueeze(1) + cross.b + x_in  # x0 (x_l . w) + b + x_l
        linear = model.deep_layers[layer].layers[0]
        h = _relu(h_in @ linear.weight.T + linear.bias)  # ReLU(W h_l + b)
        shared = x * h  # Hadamard bridge
    out = torch.cat([x, h, shared], dim=1) @ model.head.weight[0] + model.head.bias
    return out  # (B,)


@pytest.mark.parametrize("batch", [1, 7])
def test_edcn_forward_matches_the_paper_equations(batch):
    model = EDCN(NUM_FEATURES, F, dataclasses.replace(SMALL, regulation_batch_norm=False))
    with torch.no_grad():  # distinct gates per tower and layer, so a swapped gate shows
        for reg in [*model.cross_regulation, *model.deep_regulation]:
            reg.gate_logits.normal_()
    ids = _ids(batch)
    torch.testing.assert_close(model(ids), _edcn_by_hand(model, ids, float(F)))


def test_edcn_regulation_batch_norm_sits_after_every_gate():
    model = EDCN(NUM_FEATURES, F, SMALL).eval()  # regulation batch norm is on by default
    norms = [reg.norm for reg in [*model.cross_regulation, *model.deep_regulation]]
    assert all(isinstance(norm, torch.nn.BatchNorm1d) for norm in norms)
    with torch.no_grad():
        for reg in [*model.cross_regulation, *model.deep_regulation]:
            reg.gate_logits.normal_()
    # fresh running statistics (mean 0, var 1) and affine (1, 0): the norm is v / sqrt(1 + eps)
    scale = 1 / (1 + norms[0].eps) ** 0.5
    ids = _ids(7)
    torch.testing.assert_close(model(ids), _edcn_by_hand(model, ids, scale))


def test_edcn_signal_does_not_vanish_through_the_layers():
    """With the reference embedding init N(0, 0.01) the Hadamard bridge multiplies two small
    tensors at every layer; the regulation batch norm keeps the last layer's features at unit
    scale, without it they shrink by orders of magnitude (the cause of EDCN barely learning)."""
    cfg = dataclasses.replace(SMALL, cross_layers=3)
    ids = _ids(256)

    def last_bridge_std(model: EDCN) -> float:
        outputs = []
        handle = model.bridges[-1].register_forward_hook(lambda m, i, out: outputs.append(out))
        model.train()(ids)
        handle.remove()
        return float(outputs[0].detach().std())

    torch.manual_seed(0)
    with_norm = last_bridge_std(EDCN(NUM_FEATURES, F, cfg))
    torch.manual_seed(0)
    without = last_bridge_std(
        EDCN(NUM_FEATURES, F, dataclasses.replace(cfg, regulation_batch_norm=False))
    )
    assert with_norm > 0.05
    assert without < 1e-4


def test_regulation_eps_is_the_batch_norm_eps_and_defaults_to_the_authors_setting():
    assert ModelConfig().regulation_eps == 1e-5 and ModelConfig().regulation_batch_norm
    model = EDCN(NUM_FEATURES, F, dataclasses.replace(SMALL, regulation_eps=1e-3))
    norms = [reg.norm for reg in [*model.cross_regulation, *model.deep_regulation]]
    assert [norm.eps for norm in norms] == [1e-3] * len(norms)
    # the eps enters the standardisation: (v - mean) / sqrt(var + eps)
    reg = FieldRegulation(F, D, batch_norm=True, eps=1e-3).train()
    h = torch.randn(7, d) * 0.01
    gated = h / F  # gates start at 1/F
    expected = (gated - gated.mean()) / torch.sqrt(gated.var(unbiased=False) + 1e-3)
    torch.testing.assert_close(reg(h), expected)
    with pytest.raises(ValueError, match="regulation_eps must be positive"):
        ModelConfig(regulation_eps=0.0)
    with pytest.raises(ValueError, match="eps must be positive"):
        FieldRegulation(F, D, batch_norm=True, eps=-1.0)
