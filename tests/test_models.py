"""Baseline models: registry, shapes at batch 1 and 7, gradients, and a few structural checks."""

import dataclasses

import pytest
import torch

from optfusion_lab.components import FeatureEmbedding
from optfusion_lab.models import MODELS, ModelConfig, XDeepFM, build_model

NUM_FEATURES, F = 40, 4
SMALL = ModelConfig(embed_dim=3, mlp_dims=(8, 6), cross_layers=2)
CONFIGS = {
    "small": SMALL,
    "bn-dropout": dataclasses.replace(SMALL, batch_norm=True, dropout=0.2),
    "low-rank": dataclasses.replace(SMALL, low_rank=2, cin_sizes=(4, 2)),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ids(batch: int) -> torch.Tensor:
    return torch.randint(0, NUM_FEATURES, (batch, F))


def test_model_names():
    assert list(MODELS) == [
        "dnn",
        "ipnn",
        "deepfm",
        "dcn",
        "xdeepfm",
        "dcnv2-stacked",
        "dcnv2-parallel",
        "edcn",
    ]


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="dnn, ipnn, deepfm"):
        build_model("widedeep", NUM_FEATURES, F, SMALL)


def test_config_is_frozen_and_validated():
    cfg = ModelConfig()
    assert (cfg.embed_dim, cfg.mlp_dims, cfg.cross_layers) == (16, (400, 400, 400), 3)
    assert (cfg.cin_sizes, cfg.low_rank, cfg.dropout, cfg.batch_norm) == (None, None, 0.0, False)
    assert cfg.embed_init_std == 0.01
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.embed_dim = 8  # type: ignore[misc]
    with pytest.raises(ValueError):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError):
        ModelConfig(low_rank=0)


@pytest.mark.parametrize("cfg_name", CONFIGS)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 7])
def test_shapes(name, cfg_name, batch):
    model = build_model(name, NUM_FEATURES, F, CONFIGS[cfg_name])
    if CONFIGS[cfg_name].batch_norm:
        model.eval()  # batch norm cannot train on a batch of 1
    logits = model(_ids(batch))
    assert logits.shape == (batch,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_default_config_builds(name):
    model = build_model(name, NUM_FEATURES, F, ModelConfig())
    assert model(_ids(2)).shape == (2,)


@pytest.mark.parametrize("cfg_name", CONFIGS)
@pytest.mark.parametrize("name", MODELS)
def test_gradient_reaches_every_parameter(name, cfg_name):
    model = build_model(name, NUM_FEATURES, F, CONFIGS[cfg_name])
    model(_ids(7)).sum().backward()
    missing = [p_name for p_name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert model.embedding.table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_embedding_attribute(name):
    model = build_model(name, NUM_FEATURES, F, SMALL)
    assert isinstance(model.embedding, FeatureEmbedding)
    assert model.embedding.table.weight.shape == (NUM_FEATURES, SMALL.embed_dim)


@pytest.mark.parametrize("name", MODELS)
def test_samples_are_independent(name):
    """No mixing across the batch (in eval mode): each logit depends on its own row only."""
    model = build_model(name, NUM_FEATURES, F, CONFIGS["bn-dropout"]).eval()
    ids = _ids(7)
    batched = model(ids)
    one_by_one = torch.cat([model(ids[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(batched, one_by_one)


def test_xdeepfm_default_cin_sizes():
    model = XDeepFM(NUM_FEATURES, F, SMALL)
    assert [layer.out_size for layer in model.cin.layers] == [F, F, F]
    custom = XDeepFM(NUM_FEATURES, F, dataclasses.replace(SMALL, cin_sizes=(5, 2)))
    assert [layer.out_size for layer in custom.cin.layers] == [5, 2]


def test_deepfm_is_sum_of_linear_fm_and_mlp():
    model = build_model("deepfm", NUM_FEATURES, F, SMALL)
    ids = _ids(7)
    v = model.embedding(ids)
    w = model.linear.weight.table.weight[:, 0]
    linear = w[ids].sum(dim=1) + model.linear.bias
    fm = sum((v[:, i] * v[:, j]).sum(dim=-1) for i in range(F) for j in range(i + 1, F))
    mlp = model.mlp(v.flatten(start_dim=1))[:, 0]
    torch.testing.assert_close(model(ids), linear + fm + mlp)


@pytest.mark.parametrize("name", ["dcn", "dcnv2-parallel"])
def test_parallel_models_concat_cross_and_deep(name):
    model = build_model(name, NUM_FEATURES, F, SMALL)
    ids = _ids(7)
    e = model.embedding(ids).flatten(start_dim=1)
    expected = model.head(torch.cat([model.cross(e), model.mlp(e)], dim=1))[:, 0]
    torch.testing.assert_close(model(ids), expected)
    assert len(model.cross.layers) == SMALL.cross_layers


def test_dcnv2_stacked_feeds_cross_into_mlp():
    model = build_model("dcnv2-stacked", NUM_FEATURES, F, SMALL)
    ids = _ids(7)
    e = model.embedding(ids).flatten(start_dim=1)
    torch.testing.assert_close(model(ids), model.mlp(model.cross(e))[:, 0])


def test_ipnn_feeds_inner_products_and_embedding_to_mlp():
    model = build_model("ipnn", NUM_FEATURES, F, SMALL)
    ids = _ids(7)
    v = model.embedding(ids)
    products = torch.stack(
        [(v[:, i] * v[:, j]).sum(dim=-1) for i in range(F) for j in range(i + 1, F)], dim=1
    )
    expected = model.mlp(torch.cat([products, v.flatten(start_dim=1)], dim=1))[:, 0]
    torch.testing.assert_close(model(ids), expected)


def test_xdeepfm_is_sum_of_linear_cin_and_mlp():
    model = build_model("xdeepfm", NUM_FEATURES, F, SMALL)
    ids = _ids(7)
    v = model.embedding(ids)
    linear = model.linear(ids)[:, 0]
    cin = model.cin_head(model.cin(v))[:, 0]
    mlp = model.mlp(v.flatten(start_dim=1))[:, 0]
    torch.testing.assert_close(model(ids), linear + cin + mlp)
