# Every target creates .venv when it is missing; Python 3.11 (or >= 3.10) is all it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Without a GPU (no nvidia-smi, or it fails) torch comes from its CPU index when that answers
# within a few seconds (a 0.2 GB build instead of the 2.5 GB CUDA one), else from pip's default
# index; pip's configured constraints apply either way. TORCH_CPU_INDEX= skips the attempt.
# --no-compile: Python compiles a module when it is first imported, and three in four of the
# 8,800 installed modules never are (most of torch, sympy, mypy); compiling all of them at
# install time took 25 s of one core here (python -m compileall on a copy of site-packages).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC := "torch>=2.4" "torchvision>=0.19"

$(STAMP): $(BIN)/python pyproject.toml
	@if [ -n "$(TORCH_CPU_INDEX)" ] && ! nvidia-smi -L >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$(TORCH_CPU_INDEX)/torch/" 2>/dev/null \
	    && $(BIN)/python -m pip install --quiet --no-compile --timeout 10 --retries 0 --index-url "$(TORCH_CPU_INDEX)" $(TORCH_SPEC); then \
	    echo "no GPU here: torch from $(TORCH_CPU_INDEX)"; \
	  else echo "no GPU here, but $(TORCH_CPU_INDEX) did not answer: torch from pip's default index"; fi; \
	fi
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	@$(BIN)/python -c "import torch; print('installed torch', torch.__version__, '(CUDA ' + torch.version.cuda + ' build)' if torch.version.cuda else '(CPU build)')"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

demo: $(STAMP)
	$(BIN)/tallformer demo

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
