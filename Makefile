# Plain task runner. `make run`, `make test` and `make lab` bootstrap .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS := runs

.PHONY: run pipeline test test-fast lab sync-notebooks lint samples bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	touch $(STAMP)

# The main job: execute the notebook course (every notebooks/NN_*.ipynb, in order) with
# Papermill on the embedded data; executed notebooks, offline HTML pages and index.html go
# to runs/course/.
run: $(STAMP)
	$(BIN)/optfusion-lab course --notebooks notebooks --out $(RUNS)/course

# The command-line pipeline on the embedded data: prepare every dataset in data_samples/,
# train a DCN baseline, then search a fusion on the teacher data and retrain its genotype.
pipeline: $(STAMP)
	$(BIN)/optfusion-lab prepare --dataset criteo --input data_samples/criteo_sample.txt.gz --out $(RUNS)/data/criteo
	$(BIN)/optfusion-lab prepare --dataset avazu --input data_samples/avazu_sample.csv.gz --out $(RUNS)/data/avazu
	$(BIN)/optfusion-lab prepare --dataset kdd12 --input data_samples/kdd12_sample.tsv.gz --out $(RUNS)/data/kdd12
	$(BIN)/optfusion-lab prepare --dataset kdd12 --input data_samples/teacher_kdd12.tsv.gz --out $(RUNS)/data/teacher
	$(BIN)/optfusion-lab train --data $(RUNS)/data/criteo --model dcn --preset tiny --out $(RUNS)/train/criteo-dcn --no-progress
	$(BIN)/optfusion-lab search --data $(RUNS)/data/teacher --preset tiny --out $(RUNS)/search/teacher --no-progress --truth data_samples/teacher_genotype.json
	$(BIN)/optfusion-lab retrain --data $(RUNS)/data/teacher --genotype $(RUNS)/search/teacher/genotype.json --warm-start $(RUNS)/search/teacher --out $(RUNS)/retrain/teacher --no-progress

# Lint, then the whole test suite (CI), notebooks included.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Lint and the tests that execute no notebook, for quick local runs.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not notebooks and not browser"

# JupyterLab on the course.
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# After editing a notebook's .py (the reviewed source), update its paired .ipynb (and back).
sync-notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py

lint: $(STAMP)
	$(BIN)/ruff check .

# Regenerate the embedded synthetic samples (their content is checked by tests/test_synthetic.py).
samples: $(STAMP)
	$(BIN)/python -m optfusion_lab.samples data_samples

# Every benchmark script in benchmarks/ (each in its own process), collected into
# benchmarks/results.json and the table benchmarks/RESULTS.md; bench-quick runs each script's
# quick variant (under 5 minutes) into results-quick.json and RESULTS-quick.md. The shared real
# rows (for bench_settle's real-Criteo part) are looked for where .ci/run looks for them.
REAL_SAMPLES := $(or $(OPTFUSION_REAL_SAMPLES),$(abspath ../shared/real_samples))

bench: $(STAMP)
	OPTFUSION_REAL_SAMPLES=$(REAL_SAMPLES) $(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	OPTFUSION_REAL_SAMPLES=$(REAL_SAMPLES) $(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
