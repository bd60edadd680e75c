# Every target creates .venv when it is missing; Python 3.11 (or >= 3.10) is all it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

demo: $(STAMP)
	@echo "The demo (train and test on the built-in synthetic dataset) is not there yet: it comes"
	@echo "with the training and testing commands. Meanwhile, try:"
	@echo "  $(BIN)/tallformer prepare synthetic --out data/synthetic --num-videos 40"
	@echo "  $(BIN)/tallformer model-info --config demo"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
