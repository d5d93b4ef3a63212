# Two commands on a fresh machine:  `make app` (set up + open the app)  and  `make test` (set up + run tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test setup lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch (an unpinned torch would pull a multi-GB CUDA build)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,hf]"
	# compile UMAP's numba code once into its disk cache (~25 s), so the app's first UMAP takes seconds
	-$(BIN)/python -c "from analysis.projections import warm_up_umap; warm_up_umap()"
	touch $(STAMP)

setup: $(STAMP)

app: $(STAMP)
	$(BIN)/moe-explorer app

test: $(STAMP)
	bash .ci/browser.sh
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/moe_layer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
