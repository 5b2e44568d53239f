"""The search-cost measurements (optfusion_lab.cost)."""

from __future__ import annotations

import pytest
import torch

from optfusion_lab.cost import (
    reference_dcn_config,
    search_cost,
    step_seconds,
    supernet_parameters,
    training_step_optimizer,
)
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.train import JointOptimizer, TrainConfig


@pytest.mark.parametrize("layers,embed_dim", [(1, 2), (3, 4)])
def test_supernet_parameters_by_part_match_the_formulas_and_the_network(layers, embed_dim):
    F = 5
    cfg = SupernetConfig(embed_dim=embed_dim, num_layers=layers)
    parts = supernet_parameters(100, F, cfg)
    d, edges = F * embed_dim, 2 * layers * layers + 4 * layers + 3
    assert parts["concat"] == (edges - 1) * d * d + (2 * layers + 1) * d
    assert parts["att"] == (edges - 1) * (2 * d * d + d)
    assert parts["add"] == parts["prod"] == 0
    assert parts["embedding"] == 100 * embed_dim
    assert parts["architecture"] == edges + (2 * layers + 1) * 4
    net = FusionNetwork(100, F, cfg)
    assert sum(parts.values()) == sum(p.numel() for p in net.parameters())


def test_a_supernet_step_steps_the_architecture_too():
    net = FusionNetwork(50, 3, SupernetConfig(embed_dim=2))
    optimizer = training_step_optimizer(net, TrainConfig(), arch_lr=0.5)
    assert isinstance(optimizer, JointOptimizer)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["architecture"]["lr"] == 0.5
    assert {id(p) for p in groups["architecture"]["params"]} == {
        id(p) for p in net.arch_parameters()}


def test_step_seconds_trains_the_model(teacher_dir):
    data = PreparedData.open(teacher_dir)
    net = FusionNetwork(data.num_features, data.num_fields, SupernetConfig(embed_dim=2))
    alpha = net.alpha.detach().clone()
    seconds = step_seconds(net, data, batch_size=64, warmup=1, steps=2)
    assert seconds > 0
    assert not torch.equal(alpha, net.alpha.detach())  # the architecture moved
    with pytest.raises(ValueError, match="steps must be >= 1"):
        step_seconds(net, data, steps=0)


def test_search_cost_compares_with_the_reference_dcn(teacher_dir):
    data = PreparedData.open(teacher_dir)
    cost = search_cost(data, SupernetConfig(embed_dim=2), batch_size=64, warmup=0, steps=1)
    assert reference_dcn_config(data.num_fields, 2).mlp_dims == (2 * data.num_fields,) * 3
    assert cost.supernet_parameters == sum(cost.parts.values())
    assert cost.step_ratio == pytest.approx(cost.supernet_step_seconds / cost.dcn_step_seconds)
    assert cost.to_dict()["parameters_att"] == cost.parts["att"]
