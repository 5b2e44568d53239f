"""The synthetic generator: reproducible embedded samples and a planted, learnable truth."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_SAMPLES
from sklearn.metrics import roc_auc_score

import optfusion_lab.data
from optfusion_lab.data import PrepareConfig, prepare
from optfusion_lab.data.synthetic import PLANTED, SAMPLES, column_specs, generate, to_raw_bytes


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_embedded_samples_are_reproduced_by_the_generator(dataset):
    name, rows, seed = SAMPLES[dataset]
    committed = gzip.decompress((DATA_SAMPLES / name).read_bytes())
    assert to_raw_bytes(generate(dataset, rows, seed)) == committed
    assert (DATA_SAMPLES / name).stat().st_size <= 1 << 20


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_embedded_samples_prepare_cleanly(dataset, tmp_path):
    name, rows, _ = SAMPLES[dataset]
    meta = prepare(DATA_SAMPLES / name, tmp_path / "out", PrepareConfig(dataset))
    assert sum(meta["num_rows"].values()) == rows and meta["bad_lines"]["skipped"] == 0
    assert 0.1 < sum(meta["num_positive"].values()) / rows < 0.4


@pytest.mark.parametrize("dataset", sorted(SAMPLES))
def test_planted_truth_explains_the_labels(dataset):
    data = generate(dataset, 20_000, seed=5)
    assert roc_auc_score(data.labels, data.logits) > 0.75
    planted = PLANTED[dataset]
    names = {s.name for s in column_specs(dataset)}
    roles = set(planted.first_order) | set(planted.nonlinear) | {c for p in planted.crosses
                                                                 for c in p}
    assert roles <= names


def test_structure_depends_on_the_seed_not_the_row_count():
    small, large = generate("criteo", 500, seed=3), generate("criteo", 2000, seed=3)
    # Same latent values give the same logit in both files.
    key = np.stack([small.latent[n] for n in sorted(small.latent)], 1)
    key_large = np.stack([large.latent[n] for n in sorted(large.latent)], 1)
    lookup = {row.tobytes(): logit for row, logit in zip(key_large, large.logits, strict=True)}
    common = [(row.tobytes(), logit) for row, logit in zip(key, small.logits, strict=True)
              if row.tobytes() in lookup]
    for k, logit in common:
        assert np.isclose(lookup[k], logit)
    other = generate("criteo", 500, seed=4)
    assert not np.allclose(other.logits, small.logits)


def test_kdd12_ids_exceed_int64():
    table = generate("kdd12", 2000, seed=0).table
    urls = [int(v) for v in table.column("DisplayURL").to_pylist()]
    assert max(urls) > 2**63 - 1


# ---------------------------------------------------------------- teacher data


def test_teacher_sample_is_reproduced_and_its_genotype_stated():
    from optfusion_lab.data.teacher import TEACHER_GENOTYPE_FILE, TEACHER_SAMPLE
    from optfusion_lab.models.genotype import Genotype
    from optfusion_lab.models.teacher import TEACHER_GENOTYPE, generate_teacher

    name, rows, seed = TEACHER_SAMPLE
    committed = gzip.decompress((DATA_SAMPLES / name).read_bytes())
    data = generate_teacher(rows, seed)
    assert to_raw_bytes(data) == committed
    assert Genotype.load(DATA_SAMPLES / TEACHER_GENOTYPE_FILE) == TEACHER_GENOTYPE
    assert roc_auc_score(data.labels, data.logits) > 0.8  # the teacher's own AUC: the ceiling


def test_teacher_inputs_survive_preprocessing_unchanged(tmp_path):
    from optfusion_lab.data.teacher import TEACHER_SAMPLE, TEACHER_VOCAB

    meta = prepare(DATA_SAMPLES / TEACHER_SAMPLE[0], tmp_path / "t", PrepareConfig("kdd12"))
    # Every latent value is kept (no OOV merging): the student sees a relabelling of them.
    assert meta["cardinalities"] == [v + 1 for v in TEACHER_VOCAB]


def test_genotype_score_against_the_teacher():
    import dataclasses

    from optfusion_lab.models.genotype import Genotype
    from optfusion_lab.models.teacher import TEACHER_GENOTYPE, score_genotype

    perfect = score_genotype(TEACHER_GENOTYPE)
    assert perfect.edge_agreement == perfect.edge_recall == perfect.operation_agreement == 1.0
    alpha = list(TEACHER_GENOTYPE.alpha)
    graph = TEACHER_GENOTYPE.graph
    alpha[graph.edges.index(("D1", "OUT"))] = 1.0  # one extra live edge
    beta = [list(r) for r in TEACHER_GENOTYPE.beta]
    beta[-1] = [0.0, 0.0, 5.0, 0.0]  # OUT picks concat instead of add
    sizes = ("num_fields", "embed_dim", "num_layers", "shallow", "operations")
    same = {k: getattr(TEACHER_GENOTYPE, k) for k in sizes}
    other = Genotype.from_arch(**same, alpha=alpha, beta=beta)
    score = score_genotype(other)
    assert score.edge_agreement == 32 / 33 and score.edge_recall == 1.0
    assert score.edge_precision == 8 / 9 and score.operation_agreement < 1.0
    assert dataclasses.asdict(score) == score.__dict__


def test_samples_writer_reproduces_every_committed_sample(tmp_path):
    from optfusion_lab.samples import main as write_samples_main

    write_samples_main([str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in DATA_SAMPLES.iterdir() if p.name != "README.md")
    assert written == committed
    for name in written:
        assert (tmp_path / name).read_bytes() == (DATA_SAMPLES / name).read_bytes(), name


def test_data_package_imports_no_model_code():
    """Layers point one way: data/ knows nothing of models/ (the batch loader alone uses torch)."""
    import ast

    model_side = {"models", "components", "fusion", "train", "search", "samples"}
    package = Path(optfusion_lab.data.__file__).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                parts = set(name.lstrip(".").split("."))
                assert not parts & model_side, f"{module.name} imports {name}"
                if module.name != "loader.py":
                    assert not name.startswith("torch"), f"{module.name}: {name}"
