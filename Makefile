# Fresh machine: `make demo` or `make test` — each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0: on the project's CPU machines pip takes it from local disk; override for your CUDA build
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rlvr demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python benchmarks/rollout.py

.PHONY: install demo test bench
