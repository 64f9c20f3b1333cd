# Two entry points for a fresh machine: `make demo` (set up + screening demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet ".[test,bench]"

demo: setup
	$(BIN)/fastgap demo

test: setup
	$(BIN)/pytest

clean:
	rm -rf build dist $(VENV)
