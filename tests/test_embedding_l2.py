"""The embedding-L2 option: why coupled L2 hurts rare features, and how it is switched off."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from optfusion_lab.cli import main
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.presets import PRESETS, resolve_preset, with_embedding_l2
from optfusion_lab.train import TrainConfig, make_optimizer

CRITEO_SAMPLE = Path(__file__).resolve().parents[1] / "data_samples" / "criteo_sample.txt.gz"
META = {"dataset": "avazu", "num_fields": 24}


def test_reference_presets_keep_embedding_l2_and_the_option_switches_only_it_off():
    for name in ("criteo", "avazu", "kdd12"):
        assert PRESETS[name].embedding_l2
    _, reference = resolve_preset("avazu", "dcn", META)
    _, off = resolve_preset(with_embedding_l2(PRESETS["avazu"], False), "dcn", META)
    assert reference.l2_emb == reference.l2_nn == 3e-6
    assert off.l2_emb == 0.0 and off.l2_nn == 3e-6
    assert with_embedding_l2(PRESETS["avazu"], None) is PRESETS["avazu"]
    assert with_embedding_l2(PRESETS["avazu"], True).embedding_l2


def test_coupled_l2_with_adam_erases_the_rows_of_absent_features():
    """Adam rescales the tiny decay gradient ``l2 * w`` of a row that no batch contains into a
    step of about ``lr``: the row of a rare feature shrinks by ``lr`` per step between its
    occurrences. Without embedding L2 the row does not move."""
    num_features, num_fields, rare = 50, 4, 49
    cfg = ModelConfig(embed_dim=4, mlp_dims=(8,), cross_layers=1)
    moved = {}
    for l2_emb in (3e-6, 0.0):
        torch.manual_seed(0)
        model = build_model("dnn", num_features, num_fields, cfg)
        row = model.embedding.table.weight[rare].detach().clone()
        optimizer = make_optimizer(model, TrainConfig(lr_emb=1e-3, l2_emb=l2_emb, l2_nn=0.0))
        for _ in range(10):  # batches without the rare feature
            ids = torch.randint(0, rare, (32, num_fields))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(ids), torch.randint(0, 2, (32,)).float()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        after = model.embedding.table.weight[rare].detach()
        moved[l2_emb] = float((after - row).abs().max())
        if l2_emb > 0:  # steps of about lr = 1e-3 each, whatever the size of l2
            assert moved[l2_emb] > 2e-3
            assert after.abs().max() < row.abs().max()
    assert moved[0.0] == 0.0


def test_cli_embedding_l2_off_is_recorded(tmp_path):
    data = tmp_path / "criteo"
    prepare(CRITEO_SAMPLE, data, PrepareConfig(dataset="criteo"))
    run = tmp_path / "run"
    code = main(["train", "--data", str(data), "--model", "dnn", "--out", str(run),
                 "--preset", "tiny", "--epochs", "1", "--seeds", "0", "--device", "cpu",
                 "--embed-dim", "3", "--mlp", "8", "--l2", "1e-4", "--embedding-l2", "off",
                 "--no-progress", "--threads", "1"])
    assert code == 0
    result = json.loads((run / "result.json").read_text())
    assert result["train_config"]["l2_emb"] == 0.0
    assert result["train_config"]["l2_nn"] == 1e-4
    assert result["metadata"]["embedding_l2"] is False
    assert result["metadata"]["arguments"]["embedding_l2"] == "off"
    on = tmp_path / "on"
    assert main(["train", "--data", str(data), "--model", "dnn", "--out", str(on), "--preset",
                 "tiny", "--epochs", "1", "--seeds", "0", "--device", "cpu", "--embed-dim", "3",
                 "--mlp", "8", "--l2", "1e-4", "--no-progress", "--threads", "1"]) == 0
    result_on = json.loads((on / "result.json").read_text())
    assert result_on["train_config"]["l2_emb"] == 1e-4 and result_on["metadata"]["embedding_l2"]
