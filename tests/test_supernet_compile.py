"""``torch.compile`` of the supernet (``TrainConfig.compile``, off by default).

The custom autograd Functions of the fusion nodes (``fusion.gated``, ``fusion.gates``) must trace
into one graph (no graph break) and keep their straight-through gradients: on a fixed batch the
compiled supernet's outputs and the gradients of alpha, beta and every weight equal those of the
frozen copy of the previous code, with edges on, gated off and with dead nodes.

The default test compiles with the ``aot_eager`` backend: Dynamo's trace and AOTAutograd's
forward and backward graphs, i.e. everything that decides the gradients, in a few seconds. The
inductor backend (the generated C++ kernels) takes about a minute to compile even this small
graph on a CPU, so that check is marked slow.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_supernet_frozen import (
    TOLERANCES,
    assert_same,
    batch,
    outputs_and_gradients,
    set_alpha,
    supernet,
)
from test_supernet_frozen import (
    N as N_FEATURES,
)
from torch import nn

from optfusion_lab.fusion import OPERATIONS
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import TrainConfig, fit
from optfusion_lab.train.run_config import PRESENTATION_FIELDS


def assert_compiled_equals_frozen(backend: str, dtype: torch.dtype) -> None:
    net = supernet(0, dtype, num_layers=2, operations=OPERATIONS)
    compiled = torch.compile(net, backend=backend, fullgraph=True)  # a graph break fails
    x, y = batch()
    tol = TOLERANCES[dtype]
    for arch in ("on", "gated-off", "dead"):  # alpha's values, not the graph: one compilation
        set_alpha(net, arch, seed=3)
        assert_same(net, x, y, dtype)  # eager == frozen
        expected_out, expected = outputs_and_gradients(net, net, x, y)
        out, grads = outputs_and_gradients(net, compiled, x, y)
        torch.testing.assert_close(out, expected_out, **tol)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], **tol,
                                       msg=lambda m, n=name, a=arch: f"{a}, {n}: {m}")


def test_compiled_supernet_traces_whole_and_keeps_the_gradients():
    assert_compiled_equals_frozen("aot_eager", torch.float64)


@pytest.mark.slow
def test_inductor_compiled_supernet_keeps_the_gradients():
    assert_compiled_equals_frozen("inductor", torch.float32)


def test_compile_is_off_by_default_and_not_part_of_the_fingerprint():
    assert TrainConfig().compile is False
    assert "compile" in PRESENTATION_FIELDS  # a resumed run may turn it on or off


@pytest.mark.slow
def test_fit_with_compile_trains_as_eager(teacher_dir):
    from optfusion_lab.data.dataset import PreparedData

    data = PreparedData.open(teacher_dir)
    cfg = TrainConfig(epochs=1, batch_size=256, device="cpu", progress=False, threads=1)
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        net = FusionNetwork(data.num_features, data.num_fields,
                            SupernetConfig(embed_dim=4, num_layers=1, operations=("add", "prod")))
        results.append(fit(net, data, dataclasses.replace(cfg, compile=compile_)))
    eager, compiled = (r.history.iloc[0] for r in results)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert compiled["valid_auc"] == pytest.approx(eager["valid_auc"], abs=1e-4)


def test_compile_uses_fused_adam_with_the_same_update():
    """``make_optimizer`` under ``compile``: fused Adam, one step equal to the plain Adam's."""
    from optfusion_lab.train.optim import make_optimizer

    steps = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        net = FusionNetwork(N_FEATURES, 4, SupernetConfig(embed_dim=3, num_layers=1,
                                                          operations=("add", "prod")))
        optimizer = make_optimizer(net, TrainConfig(compile=compile_, l2_nn=1e-3))
        assert all(g.get("fused") is (True if compile_ else None)
                   for g in optimizer.param_groups)
        x, y = batch()
        nn.functional.binary_cross_entropy_with_logits(net(x), y.float()).backward()
        optimizer.step()
        steps.append(net.state_dict())
    for name, value in steps[0].items():
        torch.testing.assert_close(steps[1][name], value, rtol=1e-5, atol=1e-7, msg=name)
