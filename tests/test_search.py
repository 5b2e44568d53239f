"""One-shot search, derivation and retraining, on the teacher data (a known right answer)."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pandas as pd
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
    build_supernet,
    load_warm_start,
    retrain,
    search,
    write_search_run,
)
from optfusion_lab.models import ModelConfig
from optfusion_lab.models.genotype import Genotype
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig, supernet_state_for
from optfusion_lab.models.teacher import teacher_split_auc
from optfusion_lab.train import Callback, TrainConfig, TrainState, run_seeds, seed_everything
from optfusion_lab.train.events import EventStream

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


class SpoilFromEpoch2(Callback):
    """From epoch 2 on, after every step: zero the embedding (constant predictions, so a worse
    validation AUC) and switch the first three edges into OUT off (another architecture)."""

    def on_step(self, state: TrainState) -> None:
        if state.epoch >= 2:
            with torch.no_grad():
                state.model.embedding.table.weight.zero_()
                state.model.alpha[state.model.graph.edge_slice("OUT")][:3] = -1.0


@pytest.fixture(scope="module")
def spoiled(teacher):
    """A two-epoch search whose second epoch is worse, with a listener of the history."""
    received = []
    result = search(teacher, SUPERNET, dataclasses.replace(TRAIN, epochs=2), SEARCH,
                    callbacks=[SpoilFromEpoch2()], listeners=[received.append])
    return result, received


def test_genotype_is_the_best_epochs_architecture(spoiled):
    result, _ = spoiled
    assert result.fit.best_epoch == 1 and result.fit.epochs_run == 2
    net = result.network
    assert result.genotype == net.genotype()
    history = result.history
    alpha = {epoch: history[(history.when == "epoch") & (history.epoch == epoch)
                            & (history.kind == "alpha")]["value"].to_numpy()
             for epoch in (1, 2)}
    assert np.allclose(alpha[1], result.genotype.alpha)  # the best epoch's alpha...
    assert not np.allclose(alpha[2], result.genotype.alpha)  # ...not the last epoch's
    out_inputs = [src for src, dst in result.genotype.edges if dst == "OUT"]
    assert {"E", "C0", "C1"} & set(out_inputs)  # epoch 2 switched these off; epoch 1 had some
    assert net.embedding.table.weight.abs().sum() > 0  # the weights are epoch 1's too


def test_listeners_receive_every_history_snapshot(spoiled):
    result, received = spoiled
    assert all(tuple(snapshot.columns) == HISTORY_COLUMNS for snapshot in received)
    assert pd.concat(received, ignore_index=True).equals(result.history)
    kinds = [(s["when"].iloc[0], int(s["step"].iloc[0])) for s in received]
    assert kinds[0] == ("start", 0)
    assert [k for k in kinds if k[0] == "step"] == [
        ("step", n) for n in range(SEARCH.history_every, kinds[-1][1] + 1, SEARCH.history_every)
    ]
    assert [k[0] for k in kinds].count("epoch") == 2 and kinds[-1][0] == "epoch"
    for snapshot in received:  # one row per edge and one per (node, operation)
        assert (snapshot.kind == "alpha").sum() == 33 and (snapshot.kind == "weight").sum() == 28


class StopAfterFirstStep(Callback):
    def __init__(self):
        self.after: dict[str, torch.Tensor] = {}
        self.grad: dict[str, torch.Tensor] = {}

    def on_step(self, state: TrainState) -> None:
        for name, p in state.model.named_parameters():
            self.after[name] = p.detach().clone()
            self.grad[name] = p.grad.detach().clone()
        state.request_stop("one step")


def test_one_shot_step_moves_weights_and_architecture_without_weight_decay_on_it(teacher):
    """One joint step with a large L2 on the weights: every weight with a gradient moves, and
    alpha and beta take exactly Adam's first step on their own gradient (no decay term)."""
    train = dataclasses.replace(TRAIN, l2_emb=0.5, l2_nn=0.5)
    seed_everything(train.seed)
    before = {k: v.clone() for k, v in build_supernet(teacher, SUPERNET).state_dict().items()}
    step = StopAfterFirstStep()
    search(teacher, SUPERNET, train, SEARCH, callbacks=[step])
    for name in ("alpha", "beta"):
        g = step.grad[name]
        adam_first_step = before[name] - SEARCH.arch_lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(step.after[name], adam_first_step, rtol=0, atol=1e-6)
        assert (step.after[name] != before[name]).float().mean() > 0.9  # it moved
    moved = [name for name in step.after if name not in ("alpha", "beta")
             and not torch.equal(step.after[name], before[name])]
    assert len(moved) == len(step.after) - 2  # every weight moved (L2 alone moves them)


def test_derived_model_reaches_the_dnn_baseline_on_teacher_data(teacher, searched):
    _, derived = retrain(teacher, searched.genotype, TRAIN, [0], selection="hard",
                         warm_start=searched.network.state_dict())
    d = teacher.num_fields * SUPERNET.embed_dim
    _, dnn = run_seeds("dnn", ModelConfig(embed_dim=4, mlp_dims=(d, d, d)), teacher, TRAIN, [0])
    assert derived["best_valid_auc"]["mean"] >= dnn["best_valid_auc"]["mean"]
    # How the found genotype compares with the teacher's and with chance:
    # tests/test_teacher_recovery.py.
    # The teacher itself is the ceiling: no student beats it on the same test rows.
    _, rows, seed = TEACHER_SAMPLE
    ceiling = teacher_split_auc(teacher.meta, teacher.arrays("test"), rows, seed)
    assert derived["test_auc"]["mean"] < ceiling
    with pytest.raises(ValueError, match="not generated with these parameters"):
        teacher_split_auc(teacher.meta, teacher.arrays("test"), rows, seed + 1)


class ZeroEmbedding(Callback):
    """After every step: zero the embedding, so every trained epoch predicts a constant."""

    def on_step(self, state: TrainState) -> None:
        with torch.no_grad():
            state.model.embedding.table.weight.zero_()


def test_warm_start_keeps_the_starting_weights_when_no_epoch_beats_them(teacher, searched,
                                                                        tmp_path):
    warm = searched.network.state_dict()
    retrain(teacher, searched.genotype, dataclasses.replace(TRAIN, epochs=2), [0],
            warm_start=warm, out_dir=tmp_path / "run", callbacks=[ZeroEmbedding()])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["best_epoch"] == [0] and result["train_config"]["validate_start"] is True
    assert result["best_valid_auc"]["mean"] > 0.6  # the supernet's weights, not a constant
    derived = FusionNetwork.from_genotype(searched.genotype, teacher.num_features,
                                          teacher.num_fields)
    kept = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for key, value in supernet_state_for(derived, warm).items():
        assert torch.equal(kept[key], value), key


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
    assert result["train_config"]["lr_nn"] == 1e-3  # tiny's soft (warm-start) learning rate
    scratch = tmp_path / "scratch"
    code = main(["retrain", "--data", str(teacher.directory), "--genotype",
                 str(run / "genotype.json"), "--out", str(scratch), "--seeds", "0",
                 "--epochs", "1", "--threads", "1", "--no-progress", "--selection", "soft"])
    scratch_result = json.loads((scratch / "result.json").read_text())
    assert code == 0 and scratch_result["init"] == "scratch"
    assert scratch_result["train_config"]["lr_nn"] == 3e-3  # from scratch: tiny's hard lr
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


# ---------------------------------------------------------------- a search never ends in a lost run

RUN_FILES = ("history.csv", "epochs.csv", "config.json", "result.json", "supernet.pt")


class SwitchOffOut(Callback):
    """A collapse on demand: after every step, every edge into OUT is switched off."""

    def on_step(self, state: TrainState) -> None:
        with torch.no_grad():
            state.model.alpha[state.model.graph.edge_slice("OUT")] = -1.0


def collapsing_search(data, supernet_cfg, train_cfg, search_cfg, callbacks=(), *args, **kwargs):
    """``search`` with SwitchOffOut first among the callbacks (a list or an event stream)."""
    stream = EventStream.of(callbacks)
    with stream.first(SwitchOffOut()):
        return search(data, supernet_cfg, train_cfg, search_cfg, stream, *args, **kwargs)


def test_a_collapsed_search_keeps_its_run_and_says_why(teacher, tmp_path):
    short = dataclasses.replace(TRAIN, epochs=1)
    result = collapsing_search(teacher, SUPERNET, short, SEARCH)
    assert result.genotype is None
    message = result.collapse
    assert "OUT has no live input" in message and "epoch 1" in message
    assert "first had no live input at step 10 " in message  # the first record after step 0
    assert "--arch-lr (this run: 0.1)" in message and "--alpha-init (this run: 0.5)" in message
    document = write_search_run(tmp_path / "run", result, teacher, SUPERNET, short, SEARCH)
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).is_file(), name
    assert not (tmp_path / "run" / "genotype.json").exists()
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["genotype"] is None and saved["collapse"] == message == document["collapse"]


def test_the_search_command_reports_a_collapse_with_exit_code_3(teacher, tmp_path, capsys,
                                                                monkeypatch):
    import optfusion_lab.fusion_search as search_module

    monkeypatch.setattr(search_module, "search", collapsing_search)
    run = tmp_path / "run"
    code = main(["search", "--data", str(teacher.directory), "--out", str(run), "--preset", "tiny",
                 "--epochs", "1", "--threads", "1", "--no-progress"])
    assert code == 3
    assert "the search collapsed: at its best epoch" in capsys.readouterr().err
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    code = main(["search", "--data", str(teacher.directory), "--out", str(tmp_path / "seeds"),
                 "--preset", "tiny", "--epochs", "1", "--threads", "1", "--no-progress",
                 "--seeds", "0", "1"])
    assert code == 3 and "seeds [0, 1] collapsed" in capsys.readouterr().err
    assert (tmp_path / "seeds" / "seed_1" / "result.json").is_file()  # seed 0 did not stop it


def test_the_coin_flip_search_of_the_issue_completes_with_every_file(tmp_path, capsys):
    """Criteo sample with fair-coin labels: once ended in "OUT has no active input" with
    only checkpoint.pt left (no node could revive)."""
    lines = gzip.decompress((DATA_SAMPLES / "criteo_sample.txt.gz").read_bytes()).decode()
    rng = np.random.default_rng(0)
    rows = [f"{rng.integers(0, 2)}\t{line.split(chr(9), 1)[1]}" for line in lines.splitlines()]
    raw = tmp_path / "coin.txt"
    raw.write_text("\n".join(rows) + "\n")
    prepare(raw, tmp_path / "data", PrepareConfig("criteo"))
    run = tmp_path / "run"
    code = main(["search", "--data", str(tmp_path / "data"), "--out", str(run), "--operations",
                 "add,prod", "--embed-dim", "16", "--batch-size", "512", "--epochs", "1",
                 "--seed", "1", "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    for name in (*RUN_FILES, "genotype.json"):
        assert (run / name).is_file(), name
