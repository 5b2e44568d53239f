"""Does the search find the teacher's planted fusion? Compared with chance, at the tiny budget.

Three searches of the embedded teacher sample (the ``tiny`` preset's sizes: D = 4, batch 256,
up to 3 epochs, lr 3e-3, arch_lr 0.1, alpha_init 0.5; seeds 0, 1, 2), scored against 1,000 chance
draws each (``optfusion_lab.models.teacher.mean_against_chance``): the mean over the seeds is
compared with chance's distribution of that mean. What is and is not identifiable is shown by
tests/test_identifiability.py; the README ("What the teacher can show") has the measured table.
"""

from __future__ import annotations

import dataclasses

import pytest

from optfusion_lab.data.dataset import PreparedData
from optfusion_lab.fusion_search import SearchConfig, search
from optfusion_lab.models.supernet import SupernetConfig
from optfusion_lab.models.teacher import (
    TEACHER_GENOTYPE,
    chance_distribution,
    mean_against_chance,
    random_operations,
)
from optfusion_lab.train import TrainConfig

SUPERNET = SupernetConfig(embed_dim=4)
TRAIN = TrainConfig(epochs=3, batch_size=256, lr_emb=3e-3, lr_nn=3e-3, patience=1, device="cpu",
                    progress=False, threads=1)
SEARCH = SearchConfig(arch_lr=0.1, history_every=50)
SEEDS = (0, 1, 2)
CHANCE = 1000


@pytest.fixture(scope="module")
def found(teacher_dir):
    data = PreparedData.open(teacher_dir)
    results = [search(data, SUPERNET, dataclasses.replace(TRAIN, seed=s), SEARCH) for s in SEEDS]
    assert all(r.genotype is not None for r in results), [r.collapse for r in results]
    return [r.genotype for r in results]


def test_operation_chance_is_drawn_on_the_found_edges():
    """Operation agreement's chance keeps the genotype's edges (so the same nodes are compared)
    and draws each node's operation uniformly: a mean near 1/4, whatever the edges."""
    draws = random_operations(TEACHER_GENOTYPE, 400, seed=0)
    assert {g.edges for g in draws} == {TEACHER_GENOTYPE.edges}
    chance = chance_distribution(TEACHER_GENOTYPE, count=400, seed=0)
    assert all(len(values) == 400 for values in chance.values())
    assert 0.18 < chance["operation_agreement"].mean() < 0.32
    assert chance["edge_recall"].mean() < 0.3  # random edges rarely find the teacher's


@pytest.mark.slow
def test_the_searched_operations_beat_chance_over_three_seeds(found):
    score = mean_against_chance(found, count=CHANCE)
    operations = score["operation_agreement"]
    assert operations["found"] > operations["chance_p95"], operations
    # Under the paper's objective an edge the weights ignore costs nothing, so most of the 33
    # candidate edges stay on (the teacher has 8): the reason edges are not recovered.
    assert all(len(g.edges) > 2 * len(TEACHER_GENOTYPE.edges) for g in found)
