"""The experiment helpers the course notebooks share (optfusion_lab.experiments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from optfusion_lab.experiments import (
    design_genotype,
    prepared_data,
    retrain_config,
    sample_path,
    search_configs,
    search_run,
    summarize_runs,
    train_baselines,
)
from optfusion_lab.models.genotype import FusionGraph, parallel_edges, stacked_edges


def test_sample_paths_exist_and_unknown_dataset_is_named():
    for dataset in ("criteo", "avazu", "kdd12", "teacher"):
        assert sample_path(dataset).is_file()
    with pytest.raises(FileNotFoundError, match="elsewhere/criteo_sample.txt.gz"):
        sample_path("criteo", "elsewhere")
    with pytest.raises(ValueError, match="unknown dataset 'movies'"):
        sample_path("movies")


def test_summarize_runs_matches_numpy_per_group():
    frame = pd.DataFrame({
        "model": ["b", "b", "b", "a"],
        "test_auc": [0.6, 0.7, 0.65, 0.8],
        "test_logloss": [0.5, 0.4, 0.45, 0.3],
    })
    summary = summarize_runs(frame, "model")
    assert list(summary["model"]) == ["b", "a"]  # order of first appearance
    b = summary.iloc[0]
    values = np.array([0.6, 0.7, 0.65])
    assert b["n"] == 3
    assert b["test_auc_mean"] == pytest.approx(values.mean())
    assert b["test_auc_std"] == pytest.approx(values.std(ddof=1))
    assert b["test_auc_sem"] == pytest.approx(values.std(ddof=1) / math.sqrt(3))
    single = summary.iloc[1]
    assert single["test_auc_std"] == 0.0 and single["test_logloss_mean"] == pytest.approx(0.3)


@pytest.mark.parametrize("design,edges", [("stacked", stacked_edges), ("parallel", parallel_edges)])
def test_design_genotypes_are_the_hand_made_designs(design, edges):
    genotype = design_genotype(design, num_fields=5, embed_dim=2, out_operation="concat")
    assert set(genotype.live_edges()) == set(edges(FusionGraph(3)))
    assert genotype.choice("OUT").operation == "concat"
    assert all(genotype.choice(n).operation == "add" for n in genotype.live_blocks() if n != "C0")
    with pytest.raises(ValueError, match="unknown design"):
        design_genotype("diagonal", 5, 2)


def test_retrain_config_takes_the_preset_rates():
    _, train_cfg, _ = search_configs(preset="kdd12", epochs=1)
    hard = retrain_config(train_cfg, preset="kdd12", selection="hard")
    warm_soft = retrain_config(train_cfg, preset="kdd12", selection="soft", warm_start=True)
    scratch_soft = retrain_config(train_cfg, preset="kdd12", selection="soft")
    assert (hard.lr_nn, warm_soft.lr_nn, scratch_soft.lr_nn) == (2e-3, 3e-8, 2e-3)


def test_train_baselines_gives_one_row_per_model_and_seed(teacher_dir, tmp_path):
    data = prepared_data("teacher", teacher_dir)
    runs = train_baselines(data, ["dnn", "dcn"], [0, 1], epochs=1, device="cpu", threads=1)
    assert list(zip(runs["model"], runs["seed"], strict=True)) == [
        ("dnn", 0), ("dnn", 1), ("dcn", 0), ("dcn", 1)]
    assert runs["test_auc"].between(0, 1).all()
    assert runs["test_auc"].iloc[0] != runs["test_auc"].iloc[1]  # seeds differ


def test_search_run_is_reused_only_for_the_same_search(teacher_dir, tmp_path):
    data = prepared_data("teacher", teacher_dir)
    cfgs = search_configs(epochs=1, batch_size=1024, device="cpu", threads=1)
    first = search_run(tmp_path / "a", data, *cfgs)
    assert not first.reused and (tmp_path / "a" / "supernet.pt").is_file()
    again = search_run(tmp_path / "b", data, *cfgs, reuse_from=[tmp_path / "a"])
    assert again.reused and again.directory == tmp_path / "a"
    assert again.genotype == first.genotype
    assert set(again.history["kind"]) == {"alpha", "weight"}
    other = search_configs(epochs=1, batch_size=1024, arch_lr=0.5, device="cpu", threads=1)
    changed = search_run(tmp_path / "b", data, *other, reuse_from=[tmp_path / "a"])
    assert not changed.reused and changed.directory == tmp_path / "b"
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    (tmp_path / "a" / "result.json").write_text(json.dumps({**result, "stopped": True}))
    rerun = search_run(tmp_path / "c", data, *cfgs, reuse_from=[tmp_path / "a"])
    assert not rerun.reused and rerun.directory == tmp_path / "c"  # a stopped search is not
