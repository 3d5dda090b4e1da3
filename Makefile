# The front door. `make serve` and `make test` install what they need themselves (into .venv).
SHELL := /bin/bash
PY := .venv/bin/python
# client/ too: the editable install in .venv may point at another checkout of the same project.
export PYTHONPATH := $(CURDIR):$(CURDIR)/client

.PHONY: setup serve test lint bench-overhead render clean
.DEFAULT_GOAL := help

help:
	@echo "make serve   start Triton with the embedded default (or MODEL_DIR=...) on gRPC 8001 / HTTP 8000 / metrics 8002"
	@echo "make test    run the whole test suite against a real Triton server"
	@echo "make lint    ruff"
	@echo "make render  render model_repository/ for WINGPT_TARGET=cpu|gpu-torch|gpu-trtllm into build/"
	@echo "more targets per area (engine, helm, ...): mk/*.mk"

setup:
	@bash scripts/setup.sh

serve: setup
	$(PY) -m serving serve

render: setup
	$(PY) -m serving render

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

bench-overhead: setup
	$(PY) -m serving.bench_overhead

clean:
	rm -rf build .pytest_cache .ruff_cache

# Each area (build_engine, helm, loadtest, ui, ...) adds its own targets here.
-include mk/*.mk
