"""Teacher data: labels drawn from a stated fusion genotype, so a search can be scored.

The file is in the KDD12 raw layout (TAB, no header: Click, then 11 categorical columns), whose
preprocessing is a plain per-field vocabulary. Every column's latent value is drawn from a small
Zipf-distributed vocabulary, small enough that every value is seen many times: after
``optfusion-lab prepare`` the student's ids are a per-field relabelling of the teacher's inputs,
so the teacher is exactly representable by the student's search space.

The teacher is the derived (hard) model of :data:`TEACHER_GENOTYPE` with random weights:
embeddings N(0, 1) and PyTorch's default initialisation elsewhere, seeded by ``seed``. Its raw
output is standardised with a mean and spread measured on a reference sample (that depends on the
seed only), then ``logit = TEACHER_SCALE * z + TEACHER_BIAS`` and ``click ~ Bernoulli(sigmoid)``.

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

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..models.genotype import FusionGraph, Genotype
from ..models.supernet import FusionNetwork
from .schemas import KDD12_RAW_COLUMNS
from .synthetic import ColumnSpec, SyntheticData, _zipf_indices

TEACHER_EMBED_DIM = 4  # D of the teacher (d = 11 * 4 = 44)
TEACHER_SCALE = 2.5  # spread of the standardised teacher logit
TEACHER_BIAS = -1.2  # gives a click rate near 30%
TEACHER_VOCAB = (5, 40, 30, 20, 3, 3, 40, 30, 40, 40, 40)  # per field, Impression..UserID
TEACHER_FIELDS = KDD12_RAW_COLUMNS[1:]
_EDGES = (
    ("E", "C0"), ("E", "C1"), ("C0", "C1"), ("E", "D1"),
    ("C1", "D2"), ("D1", "D2"), ("C1", "OUT"), ("D2", "OUT"),
)  # fmt: skip
_OPERATIONS = {"C1": "prod", "D1": "add", "C2": "add", "D2": "concat", "C3": "add", "D3": "add",
               "OUT": "add"}  # fmt: skip


def teacher_genotype(num_fields: int = len(TEACHER_FIELDS)) -> Genotype:
    """The stated teacher architecture (module docstring) as a genotype."""
    graph = FusionGraph(3)
    ops = ("add", "prod", "concat", "att")
    alpha = [1.0 if e in _EDGES else -1.0 for e in graph.edges]
    beta = [[4.0 if op == _OPERATIONS[n] else 0.0 for op in ops] for n in graph.fusion_nodes]
    return Genotype.from_arch(num_fields=num_fields, embed_dim=TEACHER_EMBED_DIM, num_layers=3,
                              shallow="cross", operations=ops, alpha=alpha, beta=beta)  # fmt: skip


TEACHER_GENOTYPE = teacher_genotype()


def _specs() -> list[ColumnSpec]:
    pairs = zip(TEACHER_FIELDS, TEACHER_VOCAB, strict=True)
    return [ColumnSpec(name, v, "decimal", zipf=0.8, offset=1000 * (i + 1))
            for i, (name, v) in enumerate(pairs)]  # fmt: skip


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


def _draw_latent(rng: np.random.Generator, rows: int) -> np.ndarray:
    return np.stack([_zipf_indices(rng, spec, rows) for spec in _specs()], axis=1)  # (n, F)


def teacher_logits(latent: np.ndarray, seed: int) -> np.ndarray:
    """True logits of rows given as latent indices (n, 11)."""
    net = teacher_network(seed)
    reference = _raw_teacher_output(net, _draw_latent(np.random.default_rng([seed, 2]), 4096))
    z = (_raw_teacher_output(net, latent) - reference.mean()) / reference.std()
    return TEACHER_SCALE * z + TEACHER_BIAS


def generate_teacher(rows: int, seed: int = 0) -> SyntheticData:
    """``rows`` rows in the KDD12 raw layout with labels drawn from the teacher."""
    rng = np.random.default_rng([seed, 1])
    latent = _draw_latent(rng, rows)
    logits = teacher_logits(latent, seed)
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.uint8)
    columns = {"Click": pc.cast(pa.array(labels), pa.string())}
    for j, spec in enumerate(_specs()):
        values = np.arange(spec.vocab, dtype=np.int64) + spec.offset
        columns[spec.name] = pc.cast(pa.array(values[latent[:, j]]), pa.string())
    latent_by_name = {name: latent[:, j] for j, name in enumerate(TEACHER_FIELDS)}
    return SyntheticData("kdd12", pa.table(columns), latent_by_name, logits, labels, None)


@dataclass(frozen=True)
class GenotypeScore:
    """How a found genotype compares with the teacher's, over the candidate edges."""

    edge_agreement: float  # share of candidate edges whose live/not-live status matches
    edge_precision: float  # share of found live edges that the teacher has
    edge_recall: float  # share of the teacher's live edges that were found
    operation_agreement: float  # share of nodes live in both that chose the same operation

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in self.__dict__.items()}


def score_genotype(found: Genotype, truth: Genotype = TEACHER_GENOTYPE) -> GenotypeScore:
    """Compare the *live* edges and operations of ``found`` with those of ``truth``."""
    if found.num_layers != truth.num_layers:
        raise ValueError("genotypes with different numbers of layers cannot be compared")
    edges = truth.graph.edges
    a, b = set(found.live_edges()), set(truth.live_edges())
    agreement = sum((e in a) == (e in b) for e in edges) / len(edges)
    precision = len(a & b) / len(a) if a else 0.0
    recall = len(a & b) / len(b) if b else 0.0
    both = (set(found.live_blocks()) & set(truth.live_blocks()) - {"C0"}) | {"OUT"}
    same = sum(found.choice(n).operation == truth.choice(n).operation for n in both)
    return GenotypeScore(agreement, precision, recall, same / len(both))


def teacher_split_auc(data_meta: dict, split_arrays, rows: int, seed: int, split: str = "test"):
    """The teacher's own AUC on one split of its prepared file: the ceiling for a student.

    ``data_meta`` and ``split_arrays`` (features, labels) come from the prepared teacher file
    (``PreparedData.meta`` and ``.arrays(split)``); ``rows`` and ``seed`` are the ones the file
    was generated with. The labels are checked against the regenerated ones, so a mismatch
    between file and parameters is an error, not a wrong number.
    """
    from sklearn.metrics import roc_auc_score

    from .prepare import SPLITS, split_assignment

    data = generate_teacher(rows, seed)
    in_split = split_assignment(rows, data_meta["seed"]) == SPLITS.index(split)
    labels = np.asarray(split_arrays[1])
    if not np.array_equal(data.labels[in_split].astype(np.float32), labels):
        raise ValueError("these prepared rows were not generated with this rows/seed")
    return float(roc_auc_score(labels, data.logits[in_split]))
