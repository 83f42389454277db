# hydra-edge: `make demo` and `make test` set up everything on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/hydra-edge
STAMP  := $(VENV)/.installed
JOBS   ?= 2

EXAMPLE := examples/hydra_vit_cifar10.pt2
CALIB   := examples/calib_cifar10.npz
DEMO    := build/demo

.PHONY: demo test venv clean

venv: $(STAMP)

# torch is pinned to the CPU wheel: installing it first keeps pip from pulling a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(CLI) inspect $(EXAMPLE) | tail -n 3
	$(CLI) compile $(EXAMPLE) --board host --calib $(CALIB) -o $(DEMO)
	$(CLI) validate $(DEMO)
	$(PY) examples/demo_accuracy.py --model $(EXAMPLE) --build $(DEMO)

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) tests

clean:
	rm -rf build .pytest_cache

# The converter venv for benchmarks/memory_vs_tflm.py (litert-torch, ai-edge-quantizer, tflite-micro),
# kept apart from .venv; torch first so that nothing pulls a CUDA build.
.PHONY: bench-tflm-setup bench-tflm
bench-tflm-setup: .venv-tflite/.installed
.venv-tflite/.installed: benchmarks/requirements-tflite.txt
	$(PYTHON) -m venv .venv-tflite
	.venv-tflite/bin/python -m pip install -q --upgrade pip
	.venv-tflite/bin/python -m pip install -q torch==2.13.0
	.venv-tflite/bin/python -m pip install -q -r benchmarks/requirements-tflite.txt
	touch $@

bench-tflm: $(STAMP) .venv-tflite/.installed
	$(PY) benchmarks/memory_vs_tflm.py
