"""The teacher model: labels drawn from a stated fusion genotype, so a search can be scored.

The teacher is the derived (hard) model of :data:`TEACHER_GENOTYPE` with random weights:
embeddings N(0, 1) and PyTorch's default initialisation elsewhere, seeded by ``seed``. Its raw
output is standardised with a mean and spread measured on a reference sample (that depends on the
seed only), then ``logit = TEACHER_SCALE * z + TEACHER_BIAS`` and ``click ~ Bernoulli(sigmoid)``.
Its inputs (columns, latent values, the raw table) need no model and live in
:mod:`optfusion_lab.data.teacher`.

The stated architecture (3 layers, shallow block = cross):

    C0  <- E
    C1  <- E, C0          prod
    D1  <- E              add
    D2  <- C1, D1         concat
    OUT <- C1, D2         add

It is neither the stacked nor the parallel design: a cross chain and a deep layer merged by
CONCAT in layer 2, with a skip from C1 to the output. Layer 3 is unused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.synthetic import SyntheticData
from ..data.teacher import TEACHER_FIELDS, TEACHER_VOCAB, draw_teacher_inputs, teacher_table
from ..names import OPERATIONS
from .genotype import FusionGraph, Genotype
from .supernet import FusionNetwork

TEACHER_EMBED_DIM = 4  # D of the teacher (d = 11 * 4 = 44)
TEACHER_SCALE = 2.5  # spread of the standardised teacher logit
TEACHER_BIAS = -1.2  # gives a click rate near 30%
TEACHER_EDGES = (
    ("E", "C0"),
    ("E", "C1"),
    ("C0", "C1"),
    ("E", "D1"),
    ("C1", "D2"),
    ("D1", "D2"),
    ("C1", "OUT"),
    ("D2", "OUT"),
)
TEACHER_OPERATIONS = {
    "C1": "prod",
    "D1": "add",
    "C2": "add",
    "D2": "concat",
    "C3": "add",
    "D3": "add",
    "OUT": "add",
}


def teacher_genotype(num_fields: int = len(TEACHER_FIELDS)) -> Genotype:
    """The stated teacher architecture (module docstring) as a genotype."""
    graph = FusionGraph(3)
    alpha = [1.0 if e in TEACHER_EDGES else -1.0 for e in graph.edges]
    beta = [
        [4.0 if op == TEACHER_OPERATIONS[node] else 0.0 for op in OPERATIONS]
        for node in graph.fusion_nodes
    ]
    return Genotype.from_arch(
        num_fields=num_fields,
        embed_dim=TEACHER_EMBED_DIM,
        num_layers=3,
        shallow="cross",
        operations=OPERATIONS,
        alpha=alpha,
        beta=beta,
    )


TEACHER_GENOTYPE = teacher_genotype()


def teacher_network(seed: int) -> FusionNetwork:
    """The teacher model with its seeded random weights."""
    torch.manual_seed(seed)
    net = FusionNetwork.from_genotype(TEACHER_GENOTYPE, sum(TEACHER_VOCAB), len(TEACHER_VOCAB))
    torch.nn.init.normal_(net.embedding.table.weight, 0.0, 1.0)
    return net.eval()


def _raw_teacher_output(net: FusionNetwork, latent: np.ndarray) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(TEACHER_VOCAB)[:-1]])
    with torch.no_grad():
        return net(torch.from_numpy(latent + offsets)).double().numpy()


TEACHER_SIGNALS = ("full", "interactions")


def _one_hot(latent: np.ndarray) -> np.ndarray:
    """Per-field one-hot columns of latent rows (n, 11) plus a constant column."""
    offsets = np.concatenate([[0], np.cumsum(TEACHER_VOCAB)[:-1]])
    design = np.zeros((len(latent), sum(TEACHER_VOCAB) + 1))
    design[np.arange(len(latent))[:, None], latent + offsets] = 1.0
    design[:, -1] = 1.0
    return design


def additive_part(values: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of the best *additive* approximation of ``values`` (a sum of
    one function per field, plus a constant) on rows ``latent``: apply with
    ``_one_hot(rows) @ coefficients``."""
    return np.linalg.lstsq(_one_hot(latent), values, rcond=None)[0]


def teacher_logits(latent: np.ndarray, seed: int, scale: float = TEACHER_SCALE,
                   signal: str = "full") -> np.ndarray:
    """True logits of rows given as latent indices (n, 11); ``scale`` is the spread of the
    standardised logit (a larger one gives a stronger, less noisy label signal).

    ``signal`` "full" is the teacher network's output. "interactions" is that output less its
    best additive approximation (one function per field, fitted by least squares on a 50,000-row
    reference sample): about a quarter of the full output's variance, the part that only
    interactions between fields can predict. A model of one term per field (logistic regression
    on the fields, or OUT fed by E alone) then predicts nothing (AUC 0.5), so a student has to
    learn the teacher's interactions to score at all."""
    if signal not in TEACHER_SIGNALS:
        raise ValueError(f"signal must be one of {TEACHER_SIGNALS}, got {signal!r}")
    net = teacher_network(seed)
    reference_rows = draw_teacher_inputs(np.random.default_rng([seed, 2]), 4096)
    raw = _raw_teacher_output(net, latent)
    reference = _raw_teacher_output(net, reference_rows)
    if signal == "interactions":
        fit_rows = draw_teacher_inputs(np.random.default_rng([seed, 3]), 50_000)
        coefficients = additive_part(_raw_teacher_output(net, fit_rows), fit_rows)
        raw = raw - _one_hot(latent) @ coefficients
        reference = reference - _one_hot(reference_rows) @ coefficients
    z = (raw - reference.mean()) / reference.std()
    return scale * z + TEACHER_BIAS


def generate_teacher(rows: int, seed: int = 0, scale: float = TEACHER_SCALE,
                     signal: str = "full") -> SyntheticData:
    """``rows`` rows in the KDD12 raw layout with labels drawn from the teacher (``scale`` and
    ``signal``: see :func:`teacher_logits`; the embedded sample uses the defaults)."""
    rng = np.random.default_rng([seed, 1])
    latent = draw_teacher_inputs(rng, rows)
    logits = teacher_logits(latent, seed, scale, signal)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.uint8)
    latent_by_name = {name: latent[:, j] for j, name in enumerate(TEACHER_FIELDS)}
    table = teacher_table(latent, labels)
    return SyntheticData("kdd12", table, latent_by_name, logits, labels, None)


@dataclass(frozen=True)
class GenotypeScore:
    """How a found genotype compares with the teacher's, over the candidate edges."""

    edge_agreement: float  # share of candidate edges whose live/not-live status matches
    edge_precision: float  # share of found live edges that the teacher has
    edge_recall: float  # share of the teacher's live edges that were found
    operation_agreement: float  # share of nodes live in both that chose the same operation
    # share of the teacher's live edges found, under the best renaming of the layers (the
    # renamed wiring computes the same functions: FusionGraph.layer_renamings)
    edge_recall_renamed: float = 0.0

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in self.__dict__.items()}


def _edge_scores(found: set, truth: set, edges) -> tuple[float, float, float]:
    """Agreement, precision and recall of the live edge set ``found`` against ``truth``."""
    agreement = sum((e in found) == (e in truth) for e in edges) / len(edges)
    precision = len(found & truth) / len(found) if found else 0.0
    recall = len(found & truth) / len(truth) if truth else 0.0
    return agreement, precision, recall


def compared_nodes(found: Genotype, truth: Genotype = TEACHER_GENOTYPE) -> tuple[str, ...]:
    """The nodes whose operations :func:`score_genotype` compares: fusion nodes live in both
    genotypes, and OUT always (in graph order)."""
    both = (set(found.live_blocks()) & set(truth.live_blocks()) - {"C0"}) | {"OUT"}
    return tuple(n for n in truth.graph.fusion_nodes if n in both)


def score_genotype(found: Genotype, truth: Genotype = TEACHER_GENOTYPE) -> GenotypeScore:
    """Compare the *live* edges and operations of ``found`` with those of ``truth``."""
    if found.num_layers != truth.num_layers:
        raise ValueError("genotypes with different numbers of layers cannot be compared")
    scores = _edge_scores(set(found.live_edges()), set(truth.live_edges()), truth.graph.edges)
    both = compared_nodes(found, truth)
    same = sum(found.choice(n).operation == truth.choice(n).operation for n in both)
    renamed = renamed_hits(_live_mask(found)[None], _live_mask(truth),
                           truth.graph.layer_renamings)[0]
    return GenotypeScore(*scores, same / len(both), float(renamed / len(truth.live_edges())))


def _live_mask(genotype: Genotype) -> np.ndarray:
    live = set(genotype.live_edges())
    return np.array([e in live for e in genotype.graph.edges])


def renamed_hits(wirings: np.ndarray, truth: np.ndarray, renamings: np.ndarray) -> np.ndarray:
    """Per wiring (rows of a boolean (N, edges) array), the most edges of ``truth`` it shares
    under any renaming in ``renamings`` (:attr:`FusionGraph.layer_renamings`) that keeps all its
    edges candidates."""
    best = np.zeros(len(wirings), dtype=int)
    for row in renamings:
        fits = ~wirings[:, row < 0].any(axis=1)
        kept = row >= 0
        moved = np.zeros_like(wirings)
        moved[:, row[kept]] = wirings[:, kept]
        best = np.where(fits, np.maximum(best, (moved & truth).sum(axis=1)), best)
    return best


def teacher_split_auc(data_meta: dict, split_arrays, rows: int, seed: int, split: str = "test",
                      scale: float = TEACHER_SCALE, signal: str = "full"):
    """The teacher's own AUC on one split of its prepared file: the ceiling for a student.

    ``data_meta`` and ``split_arrays`` (features, labels) come from the prepared teacher file
    (``PreparedData.meta`` and ``.arrays(split)``); ``rows``, ``seed``, ``scale`` and ``signal``
    are the ones the file was generated with. The labels are checked against the regenerated
    ones, so a mismatch between file and parameters is an error, not a wrong number.
    """
    from sklearn.metrics import roc_auc_score

    from ..data.prepare import SPLITS, split_assignment

    data = generate_teacher(rows, seed, scale, signal)
    in_split = split_assignment(rows, data_meta["seed"]) == SPLITS.index(split)
    labels = np.asarray(split_arrays[1])
    if not np.array_equal(data.labels[in_split].astype(np.float32), labels):
        raise ValueError("these prepared rows were not generated with these parameters")
    return float(roc_auc_score(labels, data.logits[in_split]))


def per_field_auc(prepared, split: str = "test") -> float:
    """AUC on ``split`` of the best model with one term per field: a logistic regression on the
    one-hot fields of ``prepared`` (a :class:`PreparedData`), fitted on its train split. What a
    model that learns no interaction between fields can reach; a student scoring no higher has
    learned nothing a search could attribute to its fusion."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    x_train, y_train = prepared.arrays("train")
    x, y = prepared.arrays(split)
    encoder = OneHotEncoder(handle_unknown="ignore").fit(x_train)
    model = LogisticRegression(max_iter=1000).fit(encoder.transform(x_train), y_train)
    return float(roc_auc_score(y, model.decision_function(encoder.transform(x))))


def random_wirings(graph: FusionGraph, size: int, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``count`` wirings drawn uniformly from those with exactly ``size`` edges that all carry
    signal from E to OUT (every edge live): a boolean (count, edges) array in graph order.

    Drawn by rejection (``size`` edges chosen uniformly, kept when all are live), in batches;
    at ``size`` 8 of 33 about one draw in 1,200 is kept."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= size <= len(graph.edges):
        raise ValueError(f"size must be in 1..{len(graph.edges)}, got {size}")
    kept, total = [], 0
    for _ in range(500):  # a bound: 100M draws
        order = rng.random((200_000, len(graph.edges))).argsort(axis=1)[:, :size]
        active = np.zeros(order.shape[:1] + (len(graph.edges),), dtype=bool)
        np.put_along_axis(active, order, True, axis=1)
        good = active[(graph.live_masks(active) == active).all(axis=1)]
        kept.append(good)
        total += len(good)
        if total >= count:
            return np.concatenate(kept)[:count]
    raise ValueError(f"fewer than {count} wirings with {size} live edges found in 100M draws")


def random_genotypes(like: Genotype, count: int, seed: int = 0) -> list[Genotype]:
    """``count`` random genotypes of ``like``'s graph and operations: each a wiring with as many
    *live* edges as ``like``, every edge live (:func:`random_wirings`), and a uniformly random
    operation per node."""
    rng = np.random.default_rng(seed)
    graph, ops = like.graph, like.operations
    sizes = {k: getattr(like, k) for k in ("num_fields", "embed_dim", "num_layers", "shallow")}
    genotypes = []
    for wiring in random_wirings(graph, len(like.live_edges()), count, rng):
        beta = np.zeros((len(graph.fusion_nodes), len(ops)))
        beta[np.arange(len(beta)), rng.integers(0, len(ops), len(beta))] = 1.0
        genotypes.append(Genotype.from_arch(**sizes, operations=ops,
                                            alpha=np.where(wiring, 1.0, -1.0).tolist(),
                                            beta=beta.tolist()))
    return genotypes


def random_operations(like: Genotype, count: int, seed: int = 0) -> list[Genotype]:
    """``count`` genotypes with exactly ``like``'s edges and a uniformly random operation per
    node: the chance level of the operations *given* the found connections (the same nodes are
    live, so operation agreement is compared on the same nodes)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    ops = like.operations
    sizes = {k: getattr(like, k) for k in ("num_fields", "embed_dim", "num_layers", "shallow")}
    genotypes = []
    for _ in range(count):
        beta = np.zeros((len(like.graph.fusion_nodes), len(ops)))
        beta[np.arange(len(beta)), rng.integers(0, len(ops), len(beta))] = 1.0
        genotypes.append(Genotype.from_arch(**sizes, operations=ops, alpha=list(like.alpha),
                                            beta=beta.tolist()))
    return genotypes


def one_operation_agreement(found: Genotype, operation: str = "add",
                            truth: Genotype = TEACHER_GENOTYPE) -> float:
    """Operation agreement of ``found``'s edges with ``operation`` at every node: a guess made
    without a search, the bar a searched operation choice should clear."""
    beta = [[1.0 if op == operation else 0.0 for op in found.operations]
            for _ in found.graph.fusion_nodes]
    sizes = {k: getattr(found, k) for k in ("num_fields", "embed_dim", "num_layers", "shallow")}
    guess = Genotype.from_arch(**sizes, operations=found.operations, alpha=list(found.alpha),
                               beta=beta)
    return score_genotype(guess, truth).operation_agreement


def chance_distribution(
    found: Genotype, truth: Genotype = TEACHER_GENOTYPE, count: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per :class:`GenotypeScore` metric, its ``count`` values under chance.

    Edge metrics: the wirings of :func:`random_genotypes` like ``found``: as many *live* edges
    as ``found``, every one of them live. (Drawing as many *active* edges anywhere leaves most
    of them dead, so chance then has fewer live edges than the found genotype and wins on
    agreement by saying "off" more often.) With the number of live edges fixed, agreement,
    precision and recall all rank a genotype by its number of teacher edges alike. Operation
    agreement: those of :func:`random_operations`, ``found``'s own edges with a uniformly random
    operation per node, so that it is scored on the same nodes as ``found`` (random edges leave
    other nodes live, often OUT alone, and the metric becomes a four-sided coin). Computed on
    edge sets and operation indices directly, with the same distributions as those two
    functions."""
    return chance_values(len(found.live_edges()), compared_nodes(found, truth), found.operations,
                         truth, count, seed)


def chance_values(
    live: int, nodes: Sequence[str], operations: Sequence[str],
    truth: Genotype = TEACHER_GENOTYPE, count: int = 1000, seed: int = 0,
) -> dict[str, np.ndarray]:
    """:func:`chance_distribution` for a genotype with ``live`` live edges whose compared
    nodes are ``nodes``, choosing among ``operations`` (what chance depends on)."""
    graph = truth.graph
    wirings = random_wirings(graph, live, count, np.random.default_rng(seed))
    truth_mask = _live_mask(truth)
    hits = (wirings & truth_mask).sum(axis=1)
    renamed = renamed_hits(wirings, truth_mask, graph.layer_renamings)
    agreement = (wirings == truth_mask).mean(axis=1)
    # a node whose true operation is not among ``operations`` never matches (index -1)
    choices = list(operations)
    wanted = np.array([choices.index(op) if (op := truth.choice(n).operation) in choices else -1
                       for n in nodes])
    drawn = np.random.default_rng(seed + 1).integers(0, len(operations), (count, len(nodes)))
    return {"edge_agreement": agreement, "edge_precision": hits / live,
            "edge_recall": hits / truth_mask.sum(),
            "operation_agreement": (drawn == wanted).mean(axis=1),
            "edge_recall_renamed": renamed / truth_mask.sum()}


def _against(value: float, values: np.ndarray) -> dict:
    """``value`` against chance's ``values`` (exact, unrounded: a tie is not a win)."""
    return {"found": round(float(value), 6), "chance_mean": round(float(values.mean()), 6),
            "chance_p95": round(float(np.percentile(values, 95)), 6),
            "beats": round(float((value > values + 1e-9).mean()), 6)}


def score_against_chance(
    found: Genotype, truth: Genotype = TEACHER_GENOTYPE, count: int = 1000, seed: int = 0
) -> dict:
    """How ``found`` compares with chance: for every :class:`GenotypeScore` metric, its value,
    the mean and 95th percentile of its ``count`` chance values (:func:`chance_distribution`)
    and the share of them it beats (strictly)."""
    found_score = dataclasses.asdict(score_genotype(found, truth))
    chance = chance_distribution(found, truth, count, seed)
    return {metric: _against(value, chance[metric]) for metric, value in found_score.items()}


def mean_against_chance(
    found: list[Genotype], truth: Genotype = TEACHER_GENOTYPE, count: int = 1000, seed: int = 0
) -> dict:
    """As :func:`score_against_chance` for the *mean* over several found genotypes (e.g. one per
    search seed): chance's i-th value is the mean of the i-th chance value of each genotype, so
    the found mean is compared with the distribution of a mean over as many chance draws."""
    if not found:
        raise ValueError("no genotypes to score")
    scores = [dataclasses.asdict(score_genotype(g, truth)) for g in found]
    chances = [chance_distribution(g, truth, count, seed + 2 * i) for i, g in enumerate(found)]
    return means_against_chance(scores, chances)


def means_against_chance(scores: list[dict], chances: list[dict]) -> dict:
    """The mean of several genotypes' exact scores (dicts of :class:`GenotypeScore` fields)
    against the mean of their chance values (:func:`chance_values`, one dict each)."""
    return {metric: _against(np.mean([s[metric] for s in scores]),
                             np.mean([c[metric] for c in chances], axis=0))
            for metric in scores[0]}
