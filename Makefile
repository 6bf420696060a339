# The README's commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint typecheck lock bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv>=0.4'
	$(UV) pip sync --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## install Quotagate and its test tools into .venv

run: $(STAMP) ## install, then start Envoy + Quotagate on the embedded default with a demo provider and key
	$(BIN)/quotagate up --demo

test: $(STAMP) ## install, then run the whole test suite (what .ci/run and CI run)
	scripts/test-prereqs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (no Envoy, no servers)
	$(BIN)/pytest -q -m "not envoy and not postgres and not redis and not soak and not browser" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, format check, mypy, import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

lock: ## re-resolve requirements.lock from pyproject.toml
	test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet 'uv>=0.4')
	$(UV) pip compile --python $(BIN)/python --extra dev --output-file requirements.lock pyproject.toml

bench: $(STAMP) ## run the benchmarks side by side and write bench/results/latest.md
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
