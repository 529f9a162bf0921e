# The two commands of the README: `make run` and `make test`. Each sets itself up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: setup run test test-fast bench clean

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh

run: setup
	$(PY) -m learner.main $(ARGS)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	@$(PY) -m pip install -q -e ".[bench]" && $(PY) -c 'import torch; assert torch.__version__ == "2.13.0+cpu", torch.__version__'
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .cache .pytest_cache
