"""The plain PyTorch baselines of benchmarks/lean_dcn.py compute what the library models compute.

At identical weights (the library model's state_dict mapped onto the plain model's names) both
give the same logits on a batch, in evaluation and in training mode (EDCN's batch norm), and
``build_plain(name)`` starts from the initial weights ``build_model(name)`` draws with the seed.
"""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from lean_dcn import (  # noqa: E402
    PLAIN_MODELS,
    LeanConfig,
    build_plain,
    library_config,
    plain_from_library,
)

from optfusion_lab.models import MODELS, build_model  # noqa: E402

NUM_FEATURES, F = 60, 5
CFG = LeanConfig(embed_dim=4, mlp_dims=(8, 6), cross_layers=2, seed=3)


def _ids(batch: int = 9) -> torch.Tensor:
    return torch.randint(0, NUM_FEATURES, (batch, F), generator=torch.Generator().manual_seed(1))


def _perturbed_library(name: str, cfg: LeanConfig) -> torch.nn.Module:
    """The library model with every weight redrawn (non-zero biases, distinct EDCN gates), so a
    swapped or transposed weight in the mapping shows in the output."""
    torch.manual_seed(cfg.seed)
    model = build_model(name, NUM_FEATURES, F, library_config(cfg))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return model


def test_every_library_baseline_has_a_plain_version():
    assert set(PLAIN_MODELS) == set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_plain_and_library_agree_at_identical_weights(name):
    library = _perturbed_library(name, CFG)
    plain = plain_from_library(name, library, NUM_FEATURES, F, CFG)
    ids = _ids()
    library.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), library(ids), rtol=1e-5, atol=1e-6)
        library.train(), plain.train()  # batch statistics (EDCN's regulation norm)
        torch.testing.assert_close(plain(ids), library(ids), rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, type(library)) for m in plain.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_build_plain_starts_from_the_library_initial_weights(name):
    torch.manual_seed(CFG.seed)
    library = build_model(name, NUM_FEATURES, F, library_config(CFG)).eval()
    plain = build_plain(name, NUM_FEATURES, F, CFG).eval()
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), library(ids), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "changes",
    [{"regulation_batch_norm": False}, {"regulation_eps": 1e-3}, {"regulation_tau": 0.5}],
)
def test_plain_edcn_follows_the_regulation_options(changes):
    cfg = dataclasses.replace(CFG, **changes)
    library = _perturbed_library("edcn", cfg)
    plain = plain_from_library("edcn", library, NUM_FEATURES, F, cfg)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), library(ids), rtol=1e-5, atol=1e-6)
        library.eval(), plain.eval()
        torch.testing.assert_close(plain(ids), library(ids), rtol=1e-5, atol=1e-6)


def test_plain_edcn_batch_norm_updates_the_same_running_statistics():
    library = _perturbed_library("edcn", CFG).train()
    plain = plain_from_library("edcn", library, NUM_FEATURES, F, CFG).train()
    with torch.no_grad():
        for batch in (_ids(9), _ids(4)):
            library(batch), plain(batch)
    for layer in range(CFG.cross_layers):
        torch.testing.assert_close(
            plain.norm_cross[layer].running_var,
            library.cross_regulation[layer].norm.running_var,
        )
        torch.testing.assert_close(
            plain.norm_deep[layer].running_mean,
            library.deep_regulation[layer].norm.running_mean,
        )
