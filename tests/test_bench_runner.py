"""benchmarks/run_all.py: every script's outcome becomes a row, none crashes the runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_all  # noqa: E402

CONTRACT = '''
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
record = {"metric": "x.rate", "value": 2.0 if args.quick else 3.0, "unit": "1/s",
          "target": ">= 1", "met": True, "note": ""}
json.dump({"benchmark": "x", "machine": {}, "records": [record]}, open(args.json, "w"))
'''
LEGACY = '''
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--json")
args = parser.parse_args()
json.dump({"benchmark": "old", "environment": {"cpus": 2},
           "target": {"target": "ratio >= 0.9", "ratio_median": 0.95, "met": True},
           "results": [{"model": "dcn", "samples_per_s": 100.0}]}, open(args.json, "w"))
'''
FAILING = '''
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--json")
parser.add_argument("--quick", action="store_true")
parser.parse_args()
raise SystemExit("broken on purpose")
'''
SKIPPING = CONTRACT.replace('"records": [record]', '"records": [], "skipped": "no CUDA"')
NO_JSON = 'print("figures on stdout only")\n'


@pytest.fixture
def script(tmp_path):
    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        return path

    return write


def test_a_script_of_the_contract_gives_its_records(script, tmp_path):
    entry = run_all.run_script(script("bench_x", CONTRACT), True, tmp_path, timeout=60)
    assert entry["status"] == "ok" and entry["args"] == ["--quick"]
    assert entry["records"][0]["value"] == 2.0  # the quick variant ran
    full = run_all.run_script(script("bench_x", CONTRACT), False, tmp_path, timeout=60)
    assert full["args"] == [] and full["records"][0]["value"] == 3.0


def test_failures_and_missing_options_are_rows_not_crashes(script, tmp_path):
    failed = run_all.run_script(script("bench_fail", FAILING), False, tmp_path, timeout=60)
    assert failed["status"] == "failed" and "broken on purpose" in failed["note"]
    no_json = run_all.run_script(script("bench_plain", NO_JSON), False, tmp_path, timeout=60)
    assert no_json["status"] == "skipped" and "--json" in no_json["note"]
    no_quick = run_all.run_script(script("bench_old", LEGACY), True, tmp_path, timeout=60)
    assert no_quick["status"] == "skipped" and "--quick" in no_quick["note"]
    skipped = run_all.run_script(script("bench_gpu_like", SKIPPING), False, tmp_path, timeout=60)
    assert skipped["status"] == "skipped" and skipped["note"] == "no CUDA"


def test_an_older_document_is_listed_by_its_numbers(script, tmp_path):
    entry = run_all.run_script(script("bench_old", LEGACY), False, tmp_path, timeout=60)
    assert entry["status"] == "ok" and "without records" in entry["note"]
    by_metric = {r["metric"]: r for r in entry["records"]}
    assert by_metric["target"]["met"] is True and by_metric["target"]["value"] == 0.95
    assert by_metric["results[dcn].samples_per_s"]["value"] == 100.0
    assert not any(m.startswith("environment") for m in by_metric)


def test_the_markdown_table_has_a_row_per_record(script, tmp_path):
    entries = [run_all.run_script(script("bench_x", CONTRACT), False, tmp_path, timeout=60),
               run_all.run_script(script("bench_fail", FAILING), False, tmp_path, timeout=60)]
    report = {"mode": "full", "finished": "now", "seconds": 1.0, "load_after": [0, 0, 0],
              "machine": {"cpu": "cpu", "cores": 2, "usable_cores": 2, "gpu": None,
                          "torch": "2", "python": "3", "load_average": [0, 0, 0]},
              "benchmarks": entries}
    text = run_all.markdown(report)
    assert "| bench_fail | failed |" in text and "| x.rate | 3 | 1/s | >= 1 | yes |" in text
    json.dumps(report)  # plain values only


def test_bench_train_writes_the_dcn_target_and_every_model_as_records():
    import argparse

    import bench_train

    def row(model, rate):
        return {"model": model, "median_samples_per_s": rate, "peak_rss_mib": 800.4,
                "parameters": 1000, "clean_runs": 3}

    args = argparse.Namespace(rows=100_000, threads=2)
    for dcn_rate, met in ((96.0, True), (94.0, False)):
        rows = [row("dcn", dcn_rate), row(bench_train.LEAN, 100.0)]
        target = {"ratio_median": dcn_rate / 100.0, "ratio_best": 1.0,
                  "met": dcn_rate / 100.0 >= bench_train.TARGET_RATIO}
        records = bench_train.train_records(rows, target, args)
        first = records[0]
        assert first["metric"] == "dcn_vs_lean_dcn_samples_ratio" and first["met"] is met
        assert first["target"] == f">= {bench_train.TARGET_RATIO}"
        assert {r["metric"] for r in records[1:]} == {
            "dcn_samples_per_s", "dcn_peak_rss",
            f"{bench_train.LEAN}_samples_per_s", f"{bench_train.LEAN}_peak_rss"}
        assert all(set(r) == {"metric", "value", "unit", "target", "met", "note"}
                   for r in records)
    assert bench_train.train_records(rows, None, args)[0]["metric"] == "dcn_samples_per_s"
