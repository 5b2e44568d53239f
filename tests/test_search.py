"""One-shot search, derivation and retraining, on the teacher data (a known right answer)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import DATA_SAMPLES

from optfusion_lab.cli import main
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.teacher import TEACHER_SAMPLE
from optfusion_lab.fusion_search import (
    HISTORY_COLUMNS,
    SearchConfig,
    load_warm_start,
    retrain,
    search,
    write_search_run,
)
from optfusion_lab.models import ModelConfig
from optfusion_lab.models.genotype import Genotype
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.models.teacher import score_genotype, teacher_split_auc
from optfusion_lab.train import TrainConfig, run_seeds

SUPERNET = SupernetConfig(embed_dim=4)
TRAIN = TrainConfig(epochs=3, batch_size=256, lr_emb=3e-3, lr_nn=3e-3, device="cpu",
                    progress=False, threads=1, seed=0)
SEARCH = SearchConfig(arch_lr=0.1, history_every=10)


@pytest.fixture(scope="module")
def teacher(teacher_dir) -> PreparedData:
    return PreparedData.open(teacher_dir)


@pytest.fixture(scope="module")
def searched(teacher):
    return search(teacher, SUPERNET, TRAIN, SEARCH)


def test_search_moves_alpha_and_beta_and_records_a_tidy_history(searched):
    history = searched.history
    assert tuple(history.columns) == HISTORY_COLUMNS
    alpha = history[history.kind == "alpha"].pivot_table(index="step", columns=["node", "input"],
                                                         values="value")
    weights = history[history.kind == "weight"].pivot_table(
        index="step", columns=["node", "operation"], values="value"
    )
    assert alpha.shape[1] == 33 and weights.shape[1] == 7 * 4
    assert (alpha.iloc[-1] - alpha.iloc[0]).abs().max() > 0.05  # alpha moved
    assert (weights.iloc[-1] - weights.iloc[0]).abs().max() > 0.05  # softmax(beta) moved
    assert np.allclose(weights.T.groupby(level="node").sum().T, 1.0)  # rows of a softmax
    epochs = history[history.when == "epoch"]["epoch"].unique().tolist()
    assert epochs == list(range(1, searched.fit.epochs_run + 1))


def test_genotype_is_the_best_epochs_architecture(searched):
    net = searched.network
    assert searched.genotype == net.genotype()
    assert searched.genotype.alpha == tuple(net.alpha.detach().tolist())
    best = searched.history[(searched.history.when == "epoch")
                            & (searched.history.epoch == searched.fit.best_epoch)]
    alpha_at_best = best[best.kind == "alpha"]["value"].to_numpy()
    assert np.allclose(alpha_at_best, searched.genotype.alpha)


def test_derived_model_reaches_the_dnn_baseline_on_teacher_data(teacher, searched):
    _, derived = retrain(teacher, searched.genotype, TRAIN, [0], selection="hard",
                         warm_start=searched.network.state_dict())
    d = teacher.num_fields * SUPERNET.embed_dim
    _, dnn = run_seeds("dnn", ModelConfig(embed_dim=4, mlp_dims=(d, d, d)), teacher, TRAIN, [0])
    assert derived["best_valid_auc"]["mean"] >= dnn["best_valid_auc"]["mean"]
    score = score_genotype(searched.genotype)
    assert 0.0 <= score.edge_agreement <= 1.0 and score.edge_recall > 0
    # The teacher itself is the ceiling: no student beats it on the same test rows.
    _, rows, seed = TEACHER_SAMPLE
    ceiling = teacher_split_auc(teacher.meta, teacher.arrays("test"), rows, seed)
    assert derived["test_auc"]["mean"] < ceiling
    with pytest.raises(ValueError, match="not generated with this rows/seed"):
        teacher_split_auc(teacher.meta, teacher.arrays("test"), rows, seed + 1)


def test_identical_searches_give_byte_identical_genotypes(teacher, searched, tmp_path):
    again = search(teacher, SUPERNET, TRAIN, SEARCH)
    assert again.genotype.to_json() == searched.genotype.to_json()
    a = write_search_run(tmp_path / "a", searched, teacher, SUPERNET, TRAIN, SEARCH)
    assert (tmp_path / "a" / "genotype.json").read_text() == searched.genotype.to_json()
    assert a["test_auc"]["per_seed"] == [searched.fit.test_auc]
    for name in ("history.csv", "epochs.csv", "config.json", "result.json", "supernet.pt"):
        assert (tmp_path / "a" / name).is_file(), name
    state = torch.load(tmp_path / "a" / "supernet.pt", weights_only=True)
    assert torch.equal(state["alpha"], searched.network.alpha.detach())


def test_warm_start_needs_matching_data(teacher, searched, tmp_path):
    write_search_run(tmp_path / "run", searched, teacher, SUPERNET, TRAIN, SEARCH)
    state = load_warm_start(tmp_path / "run", teacher)
    derived = FusionNetwork.from_genotype(searched.genotype, teacher.num_features,
                                          teacher.num_fields)
    assert derived.embedding.table.weight.shape == state["embedding.table.weight"].shape
    other = tmp_path / "other"
    prepare(DATA_SAMPLES / "kdd12_sample.tsv.gz", other, PrepareConfig("kdd12"))
    with pytest.raises(ValueError, match="warm start .* features / 11 fields, this data has"):
        load_warm_start(tmp_path / "run", PreparedData.open(other))


def test_fixed_edge_and_single_operation_searches(teacher):
    short = TrainConfig(**{**TRAIN.__dict__, "epochs": 1})
    parallel = search(teacher, SUPERNET, short, SearchConfig(design="parallel"))
    assert parallel.network.arch_parameters() == [parallel.network.beta]
    assert set(parallel.genotype.edges) == set(parallel.network.genotype().edges)
    assert ("E", "D1") in parallel.genotype.edges and ("E", "C1") not in parallel.genotype.edges
    prod_only = search(teacher, SupernetConfig(embed_dim=4, operations=("prod",)), short)
    assert {n.operation for n in prod_only.genotype.nodes} == {"prod"}
    assert set(prod_only.history.operation) == {"", "prod"}


def test_search_and_retrain_commands(teacher, tmp_path, capsys):
    run = tmp_path / "search"
    code = main(["search", "--data", str(teacher.directory), "--out", str(run), "--preset", "tiny",
                 "--epochs", "1", "--threads", "1", "--no-progress",
                 "--truth", str(DATA_SAMPLES / "teacher_genotype.json")])
    printed = capsys.readouterr().out
    assert code == 0 and "Genotype v1" in printed and "against the truth: edge_agreement" in printed
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["model_config"]["embed_dim"] == 4
    result = json.loads((run / "result.json").read_text())
    assert result["model"] == "optfusion-supernet" and "search_seconds" in result
    assert set(result["metadata"]["score_against_truth"]) >= {"edge_agreement", "edge_recall"}
    out = tmp_path / "retrain"
    code = main(["retrain", "--data", str(teacher.directory), "--genotype",
                 str(run / "genotype.json"), "--warm-start", str(run), "--out", str(out),
                 "--seeds", "0", "1", "--epochs", "1", "--threads", "1", "--no-progress",
                 "--selection", "soft"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["init"] == "warm-start" and result["model"] == "optfusion-soft"
    assert len(result["test_auc"]["per_seed"]) == 2 and result["train_config"]["batch_size"] == 256
    assert Genotype.from_dict(result["model_config"]["genotype"]) == Genotype.load(
        run / "genotype.json"
    )
    # The retrained model scores raw files like a baseline run.
    raw = tmp_path / "rows.tsv"
    raw.write_text("".join(gzip.decompress((DATA_SAMPLES / TEACHER_SAMPLE[0]).read_bytes())
                           .decode().splitlines(keepends=True)[:25]))
    assert main(["predict", "--run", str(out), "--input", str(raw), "--out",
                 str(tmp_path / "p.csv"), "--device", "cpu"]) == 0
    predictions = (tmp_path / "p.csv").read_text().splitlines()
    assert predictions[0] == "probability,label" and len(predictions) == 26
    # A genotype for other data is a one-line error.
    other = tmp_path / "criteo"
    prepare(DATA_SAMPLES / "criteo_sample.txt.gz", other, PrepareConfig("criteo"))
    capsys.readouterr()
    code = main(["retrain", "--data", str(other), "--genotype", str(run / "genotype.json"),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "11 fields" in capsys.readouterr().err
