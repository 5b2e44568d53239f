"""The settled-architecture stop (ours): the signature, the counter, and searches that use it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from optfusion_lab.cli import main
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.fusion_search import SearchConfig, search, search_run
from optfusion_lab.models import ModelConfig, build_model
from optfusion_lab.models.genotype import Genotype
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.settle import SettleCounter, architecture_signature, network_signature
from optfusion_lab.train import Callback, TrainConfig, TrainState, fit

SMALL = SupernetConfig(embed_dim=4, num_layers=1)  # 9 edges, 3 fusion nodes: fast
TRAIN = TrainConfig(epochs=2, batch_size=256, lr_emb=3e-3, lr_nn=3e-3, device="cpu",
                    progress=False, threads=1, seed=0)
WINDOW = 4


@pytest.fixture(scope="module")
def teacher(teacher_dir) -> PreparedData:
    return PreparedData.open(teacher_dir)


# ---------------------------------------------------------------- signature and counter


def test_signature_is_the_derived_genotype():
    torch.manual_seed(0)
    net = FusionNetwork(100, 3, SMALL)
    with torch.no_grad():
        net.alpha.normal_()
        net.beta.normal_()
    genotype = net.genotype()
    signature = network_signature(net).tolist()
    edges = net.graph.edges
    active = [edge for edge, on in zip(edges, signature[:len(edges)], strict=True) if on]
    assert set(active) == set(genotype.edges)
    ops = [SMALL.operations[i] for i in signature[len(edges):]]
    assert ops == [genotype.choice(node).operation for node in net.graph.fusion_nodes]
    with torch.no_grad():  # a small move that flips no sign and no argmax: the same signature
        net.alpha.mul_(1.01)
        net.beta.add_(0.001)
    assert network_signature(net).tolist() == signature
    with torch.no_grad():  # one edge switched (on to off or off to on): another signature
        net.alpha[0] = -net.alpha[0]
    assert network_signature(net).tolist() != signature


def naive_settled_step(signatures: list[list[int]], window: int) -> int | None:
    """Reference: the first step t (1-based) whose signature equals those of the `window`
    steps before it (step 0 is the start)."""
    run = 0
    for t in range(1, len(signatures)):
        run = run + 1 if signatures[t] == signatures[t - 1] else 0
        if run >= window:
            return t
    return None


def run_counter(signatures: list[list[int]], window: int) -> SettleCounter:
    counter = SettleCounter(window)
    counter.start(torch.tensor(signatures[0]))
    for step, signature in enumerate(signatures[1:], start=1):
        if counter.update(torch.tensor(signature), step):
            break
    return counter


def test_a_change_resets_the_count():
    a, b = [1, 0, 2], [1, 1, 2]
    # unchanged for 3 steps, then a change at step 4, then unchanged from step 5 on
    signatures = [a, a, a, a, b, b, b, b, b, b]
    assert run_counter(signatures, 4).settled_step == 8  # steps 5..8 unchanged
    assert run_counter(signatures, 3).settled_step == 3  # steps 1..3 unchanged
    assert run_counter(signatures, 6).settled_step is None  # never 6 unchanged steps


@pytest.mark.parametrize("window", [1, 2, 5, 9])
def test_counter_matches_a_step_by_step_count_on_random_sequences(window):
    generator = torch.Generator().manual_seed(window)
    for _ in range(50):
        alpha = torch.randn(6, generator=generator)
        beta = torch.randn(3, 4, generator=generator)
        signatures = []
        for _ in range(120):  # small random walks: signs and argmaxes flip now and then
            alpha += 0.3 * torch.randn(6, generator=generator)
            beta += 0.3 * torch.randn(3, 4, generator=generator)
            signatures.append(architecture_signature(alpha, beta).tolist())
        counter = run_counter(signatures, window)
        assert counter.settled_step == naive_settled_step(signatures, window)


def test_counter_reads_the_count_back_once_per_window_at_most_while_it_changes():
    changing = [[step % 2] for step in range(101)]  # a change at every step
    counter = run_counter(changing, 10)
    assert counter.settled_step is None and counter.reads == 10  # steps 10, 20, ..., 100
    constant = run_counter([[1]] * 101, 10)
    assert constant.settled_step == 10 and constant.reads == 1


def test_counter_state_round_trip_continues_the_count():
    a, b = [0, 1], [1, 1]
    signatures = [a, b, b, b, b, b, b, a, a, a, a, a, a, a]
    whole = run_counter(signatures, 5)
    counter = SettleCounter(5)
    counter.start(torch.tensor(signatures[0]))
    for step in range(1, 5):
        assert not counter.update(torch.tensor(signatures[step]), step)
    restored = SettleCounter(5)
    restored.load_state_dict(json.loads(json.dumps(counter.state_dict())))  # plain values
    settled = [s for s in range(5, len(signatures))
               if restored.update(torch.tensor(signatures[s]), s)]
    assert whole.settled_step == 6 and settled[0] == 6 == restored.settled_step


def test_settle_steps_is_off_by_default_and_validated():
    assert SearchConfig().settle_steps is None
    with pytest.raises(ValueError, match="settle_steps"):
        SearchConfig(settle_steps=0)


# ---------------------------------------------------------------- ending a fit early


class EndEarlyAt(Callback):
    def __init__(self, step: int, then_stop: bool = False):
        self.at, self.then_stop = step, then_stop

    def on_step(self, state: TrainState) -> None:
        if state.step == self.at:
            state.end_early("enough")
            if self.then_stop:
                state.request_stop("user")


def test_end_early_validates_the_unfinished_epoch_and_finishes(teacher):
    torch.manual_seed(0)
    model = build_model("dnn", teacher.num_features, teacher.num_fields,
                        ModelConfig(embed_dim=4, mlp_dims=(16,)))
    per_epoch = -(-len(teacher.arrays("train")[1]) // TRAIN.batch_size)
    result = fit(model, teacher, dataclasses.replace(TRAIN, epochs=3, patience=3),
                 [EndEarlyAt(per_epoch + 5)])
    assert not result.stopped and result.stop_reason == "enough"
    assert result.epochs_run == 2  # the second epoch, cut after 5 steps, was validated
    assert result.history["valid_auc"].notna().all() and result.test_auc == result.test_auc


def test_a_stop_outranks_an_early_end(teacher):
    torch.manual_seed(0)
    model = build_model("dnn", teacher.num_features, teacher.num_fields,
                        ModelConfig(embed_dim=4, mlp_dims=(16,)))
    result = fit(model, teacher, TRAIN, [EndEarlyAt(3, then_stop=True)])
    assert result.stopped and result.stop_reason == "user" and result.epochs_run == 0


# ---------------------------------------------------------------- searches


class Signatures(Callback):
    """Every step's architecture signature, per phase."""

    def __init__(self):
        self.rows: list[tuple[str, int, list[int]]] = []

    def on_fit_start(self, state: TrainState) -> None:
        self.rows.append((state.phase, state.step, network_signature(state.model).tolist()))

    def on_step(self, state: TrainState) -> None:
        self.rows.append((state.phase, state.step, network_signature(state.model).tolist()))


def test_a_settled_search_stops_early_keeps_its_files_and_records_why(teacher, tmp_path):
    seen = Signatures()
    cfg = SearchConfig(arch_lr=0.1, history_every=5, settle_steps=WINDOW)
    result = search_run(tmp_path / "run", teacher, SMALL, TRAIN, cfg, callbacks=[seen])
    assert result is not None and not result.stopped and "one-shot" in result.settled
    step, total = result.settled["one-shot"]
    assert step == total == seen.rows[-1][1]  # the last step taken
    per_epoch = -(-len(teacher.arrays("train")[1]) // TRAIN.batch_size)
    assert step < TRAIN.epochs * per_epoch  # it ended early
    signatures = [s for _, _, s in seen.rows]
    assert naive_settled_step(signatures, WINDOW) == step  # the first settled step, exactly
    assert result.stop_reason.startswith("settled") and f"step {step}" in result.stop_reason
    # the best validation epoch (the cut one counts) is restored and derived
    assert result.fit.epochs_run >= 1 and result.fit.test_auc == result.fit.test_auc
    assert result.genotype == result.network.genotype()
    saved = Genotype.load(tmp_path / "run" / "genotype.json")
    assert saved == result.genotype
    document = json.loads((tmp_path / "run" / "result.json").read_text())
    assert document["search_config"]["settle_steps"] == WINDOW
    assert document["settle"]["settled_step"] == step and document["settle"]["settled"]
    assert document["stop_reason"] == result.stop_reason and not document["stopped"]
    assert document["seeds_finished"] == [TRAIN.seed] and document["test_auc"]["mean"] > 0.5
    for name in ("history.csv", "epochs.csv", "config.json", "supernet.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    assert search_run(tmp_path / "run", teacher, SMALL, TRAIN, cfg, resume=True) is None


def test_a_window_longer_than_the_search_changes_nothing(teacher):
    plain = search(teacher, SMALL, dataclasses.replace(TRAIN, epochs=1), SearchConfig())
    long = search(teacher, SMALL, dataclasses.replace(TRAIN, epochs=1),
                  SearchConfig(settle_steps=10_000))
    assert long.settled == {} and long.stop_reason == "" and plain.stop_reason == ""
    assert long.genotype == plain.genotype and long.fit.test_auc == plain.fit.test_auc


def test_sequential_settles_phase_by_phase(teacher):
    seen = Signatures()
    result = search(teacher, SMALL, TRAIN, SearchConfig(algorithm="sequential",
                                                        settle_steps=WINDOW), callbacks=[seen])
    assert list(result.phases) == ["connections", "operations"]  # a settled phase goes on
    assert "connections" in result.settled and not result.stopped
    step, total = result.settled["connections"]
    assert step == total
    first = [s for phase, _, s in seen.rows if phase == "connections"]
    assert naive_settled_step(first, WINDOW) == step
    if "operations" in result.settled:  # the search step counts across phases
        assert result.settled["operations"][1] == step + result.settled["operations"][0]
    assert result.genotype is not None


def test_search_command_takes_the_window(teacher, tmp_path, capsys):
    run = tmp_path / "cli"
    code = main(["search", "--data", str(teacher.directory), "--out", str(run), "--preset", "tiny",
                 "--layers", "1", "--epochs", "1", "--threads", "1", "--no-progress",
                 "--stop-when-settled", str(WINDOW)])
    assert code == 0 and "settled at its step" in capsys.readouterr().out
    document = json.loads((run / "result.json").read_text())
    assert document["search_config"]["settle_steps"] == WINDOW
    assert document["settle"]["settled_step"] is not None
