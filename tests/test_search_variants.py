"""Search variants (sequential, bilevel, fixed designs and operations) and genotype stability.

The searches run once per module on the teacher data with a one-layer graph and one epoch per
phase, so the whole file stays fast on two CPU cores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from optfusion_lab import fusion_search as search_module
from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.data.loader import BatchLoader
from optfusion_lab.fusion_search import (
    HISTORY_COLUMNS,
    BilevelArchitectureStep,
    SearchConfig,
    build_supernet,
    search,
    search_phases,
    search_seeds,
    stability_summary,
    write_search_run,
    write_stability,
)
from optfusion_lab.models.genotype import FusionGraph, Genotype
from optfusion_lab.models.supernet import FusionNetwork, SupernetConfig
from optfusion_lab.names import ALGORITHMS
from optfusion_lab.train import Callback, TrainConfig, seed_everything

SUPERNET = SupernetConfig(embed_dim=4, num_layers=1)
TRAIN = TrainConfig(epochs=1, batch_size=256, lr_emb=3e-3, lr_nn=3e-3, device="cpu",
                    progress=False, threads=1, seed=0)
PHASES = {"one-shot": ["one-shot"], "sequential": ["connections", "operations"],
          "bilevel": ["bilevel"]}


class Snapshots(Callback):
    """alpha, beta and the fixed operation after every step, one list per phase."""

    def __init__(self):
        self.phases: list[list[tuple[torch.Tensor, torch.Tensor, str | None]]] = []

    def on_step(self, state):
        if state.step == 1:  # every phase is a new fit, whose steps count from 1
            self.phases.append([])
        net = state.model
        self.phases[-1].append(
            (net.alpha.detach().clone(), net.beta.detach().clone(), net.fixed_operation)
        )


class CheckedBilevelStep(BilevelArchitectureStep):
    """Compares the gradients each architecture step uses with gradients recomputed here."""

    checks: list[dict] = []  # filled by every instance (one per bilevel search)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        step = self.arch_optimizer.step

        def checked_step(*a, **k):
            self.check()
            return step(*a, **k)

        self.arch_optimizer.step = checked_step

    def next_batch(self):
        self.batch = super().next_batch()
        return self.batch

    def on_step(self, state):
        self.model = state.model
        # Before this callback runs, .grad holds what fit's training backward left there.
        self.train_grads = [p.grad.clone() for p in self.arch_parameters]
        before = [p.detach().clone() for p in self.arch_parameters]
        super().on_step(state)
        self.checks[-1]["before"] = before  # the architecture the training step left
        self.checks[-1]["after"] = [p.detach().clone() for p in self.arch_parameters]

    def check(self):
        x, y = self.batch
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), y)
        expected = torch.autograd.grad(loss, self.arch_parameters)
        self.checks.append({
            "used": [p.grad.clone() for p in self.arch_parameters],
            "valid": [g.clone() for g in expected],
            "train": self.train_grads,
            "batch": (x.clone(), y.clone()),
        })


@pytest.fixture(scope="module")
def teacher(teacher_dir) -> PreparedData:
    return PreparedData.open(teacher_dir)


@pytest.fixture(scope="module")
def runs(teacher):
    """Each algorithm once: (result, step snapshots, bilevel gradient checks)."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_module, "BilevelArchitectureStep", CheckedBilevelStep)
        for algorithm in ALGORITHMS:
            CheckedBilevelStep.checks = []
            snapshots = Snapshots()
            cfg = SearchConfig(arch_lr=0.1, history_every=10, algorithm=algorithm)
            result = search(teacher, SUPERNET, TRAIN, cfg, callbacks=[snapshots])
            out[algorithm] = (result, snapshots, CheckedBilevelStep.checks)
    return out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_gives_a_valid_genotype_and_its_history(runs, algorithm):
    result, snapshots, _ = runs[algorithm]
    g = result.genotype
    assert Genotype.from_dict(g.to_dict()) == g and g == result.network.genotype()
    assert result.algorithm == algorithm and list(result.phases) == PHASES[algorithm]
    assert result.fit is list(result.phases.values())[-1]
    history = result.history
    assert tuple(history.columns) == HISTORY_COLUMNS and len(history) > 0
    assert history.phase.unique().tolist() == PHASES[algorithm]
    graph = FusionGraph(SUPERNET.num_layers)
    per_record = len(graph.edges) + len(graph.fusion_nodes) * len(SUPERNET.operations)
    for phase, rows in history.groupby("phase", sort=False):
        assert (rows.when == "start").sum() == per_record  # the exact starting architecture
        epochs = rows[rows.when == "epoch"].epoch.unique().tolist()
        assert epochs == list(range(1, result.phases[phase].epochs_run + 1))
    assert history.step.is_monotonic_increasing  # steps count across phases
    steps = sum(len(s) for s in snapshots.phases)
    assert history.step.max() == steps and len(snapshots.phases) == len(PHASES[algorithm])
    # One epoch per phase: the last record is the final architecture, the genotype's.
    last = history[(history.when == "epoch") & (history.step == steps)]
    assert last[last.kind == "alpha"].value.tolist() == list(g.alpha)


def test_sequential_learns_connections_then_operations(teacher, runs):
    result, snapshots, _ = runs["sequential"]
    connections, operations = snapshots.phases
    seed_everything(TRAIN.seed)  # search builds its supernet right after seeding so
    initial = build_supernet(teacher, SUPERNET)
    beta0, alpha0 = initial.beta.detach(), initial.alpha.detach()
    # Phase 1: ADD fixed, beta bit-identical, alpha learned.
    assert all(op == "add" for _, _, op in connections)
    assert all(torch.equal(beta, beta0) for _, beta, _ in connections)
    assert not torch.equal(connections[-1][0], alpha0)
    # Phase 2 starts from phase 1's best alpha and never changes it; beta is learned.
    history = result.history
    start = history[(history.phase == "operations") & (history.when == "start")]
    alpha1 = torch.tensor(start[start.kind == "alpha"].value.tolist())
    assert all(op is None for _, _, op in operations)
    assert all(torch.equal(alpha, alpha1) for alpha, _, _ in operations)
    assert torch.equal(result.network.alpha.detach(), alpha1)
    assert not torch.equal(operations[-1][1], beta0)
    assert result.network.fixed_operation is None
    assert result.network.alpha.requires_grad and result.network.beta.requires_grad
    # While ADD is fixed the history shows the one-hot weights the network mixes with.
    weights = history[(history.phase == "connections") & (history.kind == "weight")]
    assert set(weights[weights.operation == "add"].value) == {1.0}
    assert set(weights[weights.operation != "add"].value) == {0.0}


def test_bilevel_architecture_gradients_come_from_validation_batches_only(teacher, runs):
    result, snapshots, checks = runs["bilevel"]
    assert len(checks) == sum(len(s) for s in snapshots.phases) > 0  # one arch step per step
    for check in checks:
        for used, valid in zip(check["used"], check["valid"], strict=True):
            assert torch.allclose(used, valid, rtol=1e-5, atol=1e-8)
    first = checks[0]
    assert all(g.abs().sum() > 0 for g in first["valid"])
    assert not all(torch.allclose(t, v) for t, v in zip(first["train"], first["valid"],
                                                        strict=True))
    x_valid, _ = teacher.arrays("valid")
    valid_rows = {tuple(r) for r in np.asarray(x_valid).tolist()}
    x, _ = first["batch"]
    assert all(tuple(r) in valid_rows for r in x.tolist())
    # The architecture moved, and only in these steps: the training steps leave it alone.
    seed_everything(TRAIN.seed)
    initial = build_supernet(teacher, SUPERNET).arch_parameters()
    after = [[p.detach() for p in initial]] + [check["after"] for check in checks[:-1]]
    for check, previous in zip(checks, after, strict=True):
        assert all(torch.equal(b, a) for b, a in zip(check["before"], previous, strict=True))
    assert not torch.equal(checks[-1]["after"][0], initial[0].detach())


def test_run_directory_records_the_algorithm_and_phases(teacher, runs, tmp_path):
    result, _, _ = runs["sequential"]
    cfg = SearchConfig(arch_lr=0.1, history_every=10, algorithm="sequential")
    document = write_search_run(tmp_path, result, teacher, SUPERNET, TRAIN, cfg)
    config = json.loads((tmp_path / "config.json").read_text())
    saved = json.loads((tmp_path / "result.json").read_text())
    assert config["search"]["algorithm"] == "sequential"
    assert saved["algorithm"] == document["algorithm"] == "sequential"
    assert [p["phase"] for p in saved["phases"]] == ["connections", "operations"]
    assert saved["test_auc"]["per_seed"] == [result.fit.test_auc]
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    assert epochs.phase.unique().tolist() == ["connections", "operations"]
    history = pd.read_csv(tmp_path / "history.csv", keep_default_na=False)
    assert tuple(history.columns) == HISTORY_COLUMNS and len(history) == len(result.history)


def test_fixed_designs_and_single_operations_with_every_algorithm(teacher):
    short = SearchConfig(history_every=10, design="parallel", algorithm="sequential")
    parallel = search(teacher, SUPERNET, TRAIN, short)  # no connections to learn: one phase
    assert list(parallel.phases) == ["operations"]
    assert set(parallel.history.kind) == {"weight"}
    prod = SupernetConfig(embed_dim=4, num_layers=1, operations=("prod",))
    # (a small arch_lr: 63 Adam steps cannot switch off every edge, which a PROD-only OUT may)
    slow = SearchConfig(arch_lr=0.005, history_every=10, algorithm="sequential")
    single = search(teacher, prod, TRAIN, slow)
    assert list(single.phases) == ["connections"]  # no operation to choose: one phase
    assert {n.operation for n in single.genotype.nodes} == {"prod"}
    stacked = search(teacher, SUPERNET, TRAIN, SearchConfig(design="stacked", algorithm="bilevel"))
    assert stacked.network.arch_parameters() == [stacked.network.beta]
    assert set(stacked.genotype.edges) == {("E", "C0"), ("C0", "D1"), ("D1", "OUT")}
    with pytest.raises(ValueError, match="nothing to learn"):
        search(teacher, prod, TRAIN, SearchConfig(design="parallel", algorithm="sequential"))
    no_add = SupernetConfig(embed_dim=4, num_layers=1, operations=("prod", "concat"))
    with pytest.raises(ValueError, match="add fixed, which is not among"):
        search(teacher, no_add, TRAIN, SearchConfig(algorithm="sequential"))


def test_unknown_algorithm_is_a_value_error():
    with pytest.raises(ValueError, match="unknown search algorithm 'darts'; choose one of "
                       "one-shot, sequential, bilevel"):
        SearchConfig(algorithm="darts")
    net = FusionNetwork(30, 3, SupernetConfig(embed_dim=2, num_layers=1))
    with pytest.raises(ValueError, match="unknown search algorithm"):
        search_phases(net, "darts")


def test_fixed_operation_mixes_one_operation_and_leaves_beta_alone():
    torch.manual_seed(0)
    net = FusionNetwork(30, 3, SupernetConfig(embed_dim=2, num_layers=2))
    x = torch.randint(0, 30, (7, 3))
    net.fix_operation("concat")
    weights = net.operation_weights()
    assert weights.shape == net.beta.shape and torch.equal(weights[:, 2], torch.ones(5))
    assert weights.sum().item() == 5
    net(x).sum().backward()
    assert net.beta.grad is None and net.alpha.grad is not None
    fixed_out = net(x)
    with torch.no_grad():  # the same network with softmax(beta) one-hot on CONCAT
        net.beta.fill_(-1e4)
        net.beta[:, 2] = 1e4
    net.fix_operation(None)
    assert torch.allclose(net(x), fixed_out)
    with pytest.raises(ValueError, match="cannot fix operation 'max'"):
        net.fix_operation("max")
    derived = FusionNetwork.from_genotype(net.genotype(), 30, 3)
    with pytest.raises(ValueError, match="no operations to fix"):
        derived.fix_operation("add")


def _genotype(alpha_on: set[tuple[str, str]], ops: dict[str, str]) -> Genotype:
    """A 1-layer genotype with the given active edges and per-node argmax operations."""
    graph = FusionGraph(1)
    operations = ("add", "prod", "concat", "att")
    alpha = [1.0 if e in alpha_on else -1.0 for e in graph.edges]
    beta = [[2.0 if op == ops.get(node, "add") else 0.0 for op in operations]
            for node in graph.fusion_nodes]
    return Genotype.from_arch(num_fields=3, embed_dim=2, num_layers=1, shallow="cross",
                              operations=operations, alpha=alpha, beta=beta)


def test_stability_summary_counts_live_edges_and_winning_operations(tmp_path):
    # Candidate edges of one layer: E->C0, E->C1, C0->C1, E->D1, C0->D1, E->OUT..D1->OUT.
    a = _genotype({("E", "C0"), ("C0", "C1"), ("C1", "OUT"), ("E", "D1"), ("D1", "OUT")},
                  {"C1": "prod", "D1": "add", "OUT": "concat"})
    b = _genotype({("E", "C0"), ("C0", "C1"), ("C1", "OUT"), ("E", "D1")},  # D1 active, dead
                  {"C1": "prod", "D1": "att", "OUT": "concat"})
    c = _genotype({("E", "D1"), ("D1", "OUT"), ("C0", "D1")},  # C0->D1 active, C0 not fed
                  {"C1": "att", "D1": "att", "OUT": "add"})
    stability = stability_summary([a, b, c], seeds=[0, 1, 2])
    assert stability["num_genotypes"] == 3 and stability["seeds"] == [0, 1, 2]
    edges = stability["edges"].set_index("edge")
    assert len(edges) == len(FusionGraph(1).edges)
    assert edges.loc["E->C0", "live_share"] == pytest.approx(2 / 3)
    assert edges.loc["E->D1", "live_share"] == pytest.approx(2 / 3)  # b's D1 reaches nothing
    assert edges.loc["E->D1", "active_share"] == 1.0
    assert edges.loc["C0->D1", "active_share"] == pytest.approx(1 / 3)
    assert edges.loc["C0->D1", "live_share"] == 0.0
    assert edges.loc["E->OUT", "live_share"] == 0.0
    ops = stability["operations"].set_index(["node", "operation"])
    assert len(ops) == 3 * 4
    assert ops.loc[("C1", "prod"), "live_share"] == pytest.approx(2 / 3)
    assert ops.loc[("C1", "prod"), "win_share"] == 1.0  # c's att on C1 does not count: dead
    assert ops.loc[("C1", "att"), "win_share"] == 0.0
    assert ops.loc[("D1", "add"), "win_share"] == 0.5  # live in a (add) and c (att)
    assert ops.loc[("D1", "att"), "win_share"] == 0.5
    assert ops.loc[("OUT", "concat"), "win_share"] == pytest.approx(2 / 3)
    assert ops.loc[("OUT", "add"), "live_share"] == 1.0

    document = write_stability(tmp_path, stability)
    assert pd.read_csv(tmp_path / "stability_edges.csv").shape == (len(edges), 3)
    assert pd.read_csv(tmp_path / "stability_operations.csv").shape == (12, 4)
    assert json.loads((tmp_path / "stability.json").read_text()) == document
    never = stability_summary([c])["operations"].set_index(["node", "operation"])
    assert np.isnan(never.loc[("C1", "add"), "win_share"])  # C1 is never live
    write_stability(tmp_path / "one", stability_summary([c]))
    saved = json.loads((tmp_path / "one" / "stability.json").read_text())
    assert {r["win_share"] for r in saved["operations"] if r["node"] == "C1"} == {None}

    other = Genotype.from_arch(num_fields=3, embed_dim=2, num_layers=1, shallow="cross",
                               operations=("add",), alpha=[1.0] * 9, beta=[[0.0]] * 3)
    with pytest.raises(ValueError, match="must share the graph and the operations"):
        stability_summary([a, other])
    with pytest.raises(ValueError, match="at least one genotype"):
        stability_summary([])


def test_search_seeds_returns_one_result_per_seed_and_writes_nothing(teacher, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    results, stability = search_seeds(teacher, SUPERNET, TRAIN, SearchConfig(history_every=10),
                                      [3, 4], on_result=lambda s, r: seen.append(s))
    assert list(tmp_path.iterdir()) == [] and seen == [3, 4]
    assert len(results) == 2 and stability["seeds"] == [3, 4]
    assert stability["num_genotypes"] == 2
    assert results[0].genotype.beta != results[1].genotype.beta  # different seeds, inits
    assert all(r.network.alpha.device.type == "cpu" for r in results)
    expected = stability_summary([r.genotype for r in results], [3, 4])
    pd.testing.assert_frame_equal(stability["edges"], expected["edges"])
    with pytest.raises(ValueError, match="distinct"):
        search_seeds(teacher, SUPERNET, TRAIN, SearchConfig(), [1, 1])


def test_bilevel_step_resumes_its_validation_passes_from_a_checkpoint(tmp_path):
    features = np.arange(20, dtype=np.int32).reshape(10, 2)
    labels = (np.arange(10) % 2).astype(np.float32)
    net = FusionNetwork(20, 2, SupernetConfig(embed_dim=2, num_layers=1))

    def step() -> BilevelArchitectureStep:
        optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.1)
        return BilevelArchitectureStep(BatchLoader(features, labels, 4, seed=5), optimizer)

    running = step()
    drawn = [running.next_batch()[0] for _ in range(5)]  # 3 batches a pass: into pass 2
    torch.save(running.state_dict(), tmp_path / "state.pt")
    resumed = step()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for _ in range(4):  # the rest of pass 2, then pass 3
        assert torch.equal(resumed.next_batch()[0], running.next_batch()[0])
    assert not torch.equal(drawn[0], drawn[3])  # each pass is reshuffled
