"""Notebooks 02 and 03 executed by Papermill on real Criteo rows (marker: notebooks).

The rows stay where ``OPTFUSION_REAL_SAMPLES`` points (CI sets it); without it these tests
skip. Parameters are tiny (one seed, one or two epochs): the point is that the notebooks read a
real raw file end to end, not what they measure on it."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from optfusion_lab import course

NOTEBOOKS = REPO / "notebooks"
CRITEO_FILE = "criteo/kaggle2014criteo_train.tiny.csv"  # Kaggle layout: Id,Label,I1..,C1.., CRLF
ON_REAL_ROWS = {
    "02_fusion_baselines": {"seeds": [0], "epochs": 2, "models": ["dnn", "dcn"]},
    "03_one_shot_search": {"seed": 0, "epochs": 1, "batch_size": 512},
}


@pytest.fixture(scope="module")
def executed_on_criteo(real_samples, tmp_path_factory):
    raw = real_samples / CRITEO_FILE
    if not raw.is_file():
        pytest.skip(f"{raw} is missing from OPTFUSION_REAL_SAMPLES")
    parameters = {"dataset": "criteo", "data_path": str(raw),
                  "threads": 1, **ON_REAL_ROWS}  # fmt: skip
    out = tmp_path_factory.mktemp("real")
    runs = course.run_course(NOTEBOOKS, out, parameters=parameters, only=list(ON_REAL_ROWS),
                             html_pages=False)  # fmt: skip
    for run in runs:
        print(f"{run.name} on real Criteo rows: {run.seconds:.1f} s")
    return {run.name: run for run in runs}


@pytest.mark.notebooks
@pytest.mark.parametrize("name", list(ON_REAL_ROWS))
def test_notebook_runs_on_real_criteo_rows(executed_on_criteo, name):
    run = executed_on_criteo[name]
    assert run.ok, run.error
    results = course.read_results(run.output_dir)
    assert results["dataset"] == "criteo"
    meta = json.loads((run.output_dir / "data" / "criteo" / "meta.json").read_text())
    assert sum(meta["num_rows"].values()) == 1999  # every row of the real file, split
