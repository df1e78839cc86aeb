# The two commands a newcomer needs: `make run` and `make test`. Only python3 and make required.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: run test check bench clean native

run: native
	$(BIN)/touchpoint serve --config $(CONFIG)

test: $(VENV)/.installed-dev native
	$(BIN)/pytest $(PYTEST_ARGS)

# The collector's hot modules compiled by mypyc (gateway/native.py), again when a source under
# gateway/ changed (a second when nothing did); without a C compiler the source runs, slower.
native: $(VENV)/.installed-native
	$(BIN)/python -W ignore::RuntimeWarning -m gateway.native

check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bus.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-native: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[native]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find gateway -name '*.so' -delete
