# fedinterest: every target sets up its own virtual environment (.venv) first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench-central bench-he clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first: the project's torch range is then already satisfied (no CUDA download)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[text,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install  ## short DP + HE federated simulation on MovieLens-100K; prints metrics and epsilon, then the report's path
	$(BIN)/fedinterest simulate --config simulations/configs/smoke.toml --out runs/smoke --fresh \
		--reference simulations/configs/reference-ml100k.json
	$(BIN)/fedinterest report runs/smoke --reference simulations/configs/reference-ml100k.json

test: install  ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench-central: install
	$(BIN)/python benchmarks/bench_central.py --out-dir runs/bench-central

bench-he: install
	$(BIN)/python benchmarks/bench_he.py

clean:
	rm -rf runs .pytest_cache
