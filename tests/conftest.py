"""Shared fixtures: small raw files written by the tests themselves, and the real samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_SAMPLES = REPO / "data_samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The folder of real Criteo/Avazu rows (never copied into the repository)."""
    value = os.environ.get("OPTFUSION_REAL_SAMPLES")
    if not value:
        pytest.skip("OPTFUSION_REAL_SAMPLES is not set (it points at ../shared/real_samples)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"OPTFUSION_REAL_SAMPLES={value} is not a directory")
    return path


def criteo_row(label="0", ints=None, cats=None) -> list[str]:
    """One Criteo row as 40 strings: label, I1..I13, C1..C26."""
    ints = ints if ints is not None else ["1"] * 13
    cats = cats if cats is not None else ["68fd1e64"] * 26
    return [label, *ints, *cats]


def write_tsv(path: Path, rows: list[list[str]], newline: str = "\n") -> Path:
    path.write_text("".join("\t".join(r) + newline for r in rows))
    return path


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """The embedded teacher sample, prepared once per test session."""
    from optfusion_lab.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("teacher") / "data"
    prepare(DATA_SAMPLES / "teacher_kdd12.tsv.gz", out, PrepareConfig("kdd12"))
    return out
