# Plain task runner. `make run` and `make test` bootstrap .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS := runs

.PHONY: run test lint samples bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on the embedded data: prepare every dataset in data_samples/ and summarise it.
run: $(STAMP)
	$(BIN)/optfusion-lab prepare --dataset criteo --input data_samples/criteo_sample.txt.gz --out $(RUNS)/data/criteo
	$(BIN)/optfusion-lab prepare --dataset avazu --input data_samples/avazu_sample.csv.gz --out $(RUNS)/data/avazu
	$(BIN)/optfusion-lab prepare --dataset kdd12 --input data_samples/kdd12_sample.tsv.gz --out $(RUNS)/data/kdd12

# Lint, then the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# Regenerate the embedded synthetic samples (their content is checked by tests/test_synthetic.py).
samples: $(STAMP)
	$(BIN)/python -m optfusion_lab.data.synthetic --write-samples data_samples

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
