# Fresh machine: `make demo` or `make test` — each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0: on the project's CPU machines pip takes it from local disk; override for your CUDA build
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)  # unquoted: TORCH may carry pip options (--index-url ...)
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rlvr demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python benchmarks/rollout.py

# GPU machine (install with your CUDA build of torch, e.g. TORCH=torch==2.13.0 from PyPI): the GPU
# tests alone, or every GPU check (the GPU tests, ch6_shapes at full shapes, memory at full depth)
gpu-test: install
	RLVR_TEST_GPU=1 $(VENV)/bin/python -m pytest -q -m gpu tests/gpu -rs

gpu-check: install
	PYTHON=$(VENV)/bin/python bash benchmarks/gpu_check.sh

# An offline GPU machine whose Python already has torch, transformers, peft and pytest: the
# pure-Python wheels rlvr needs beyond them, into .whl (then: WHEELS=.whl bash benchmarks/gpu_check.sh)
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
		math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2

.PHONY: install demo test bench gpu-test gpu-check gpu-wheels
