"""Teacher data, the part that needs no model: its columns, their latent values, its raw table.

The teacher file has labels drawn from a stated fusion genotype, so that a search can be scored
against the truth; :mod:`optfusion_lab.models.teacher` holds the teacher model and draws the
labels. The file is in the KDD12 raw layout (TAB, no header: Click, then 11 categorical
columns), whose preprocessing is a plain per-field vocabulary. Every column's latent value is
drawn from a small Zipf-distributed vocabulary, small enough that every value is seen many
times: after ``optfusion-lab prepare`` the student's ids are a per-field relabelling of the
teacher's inputs, so the teacher is exactly representable by the student's search space.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schemas import KDD12_RAW_COLUMNS
from .synthetic import ColumnSpec, _zipf_indices

TEACHER_VOCAB = (5, 40, 30, 20, 3, 3, 40, 30, 40, 40, 40)  # per field, Impression..UserID
TEACHER_FIELDS = KDD12_RAW_COLUMNS[1:]

# The embedded teacher sample in data_samples/ (labels from a stated genotype): file name, rows,
# seed; and the file that states the genotype.
TEACHER_SAMPLE = ("teacher_kdd12.tsv.gz", 20_000, 2025)
TEACHER_GENOTYPE_FILE = "teacher_genotype.json"


def teacher_columns() -> list[ColumnSpec]:
    """The teacher file's 11 categorical columns (Zipf-distributed decimal ids)."""
    pairs = zip(TEACHER_FIELDS, TEACHER_VOCAB, strict=True)
    return [
        ColumnSpec(name, vocab, "decimal", zipf=0.8, offset=1000 * (i + 1))
        for i, (name, vocab) in enumerate(pairs)
    ]


def draw_teacher_inputs(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Latent indices of ``rows`` rows, one column per field: (n, F)."""
    return np.stack([_zipf_indices(rng, spec, rows) for spec in teacher_columns()], axis=1)


def teacher_table(latent: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The raw table (Click, then the 11 columns as strings) of latent inputs and labels."""
    columns = {"Click": pc.cast(pa.array(labels), pa.string())}
    for j, spec in enumerate(teacher_columns()):
        values = np.arange(spec.vocab, dtype=np.int64) + spec.offset
        columns[spec.name] = pc.cast(pa.array(values[latent[:, j]]), pa.string())
    return pa.table(columns)
