# hydra-edge: `make demo` and `make test` set up everything on a fresh machine (toolchain/setup.sh:
# the Debian packages for the cross builds and emulators, then the Python environment in .venv).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
JOBS   ?= 2

.PHONY: setup venv demo test clean

setup:
	PYTHON=$(PYTHON) bash toolchain/setup.sh

venv:
	PYTHON=$(PYTHON) bash toolchain/setup.sh --venv

# The best shipped model on the STM32F746 (QEMU) and a Jetson Orin (qemu-aarch64): compile, validate
# bit-exact, RAM and flash against the board, instructions per inference, int8 top-1 on the target.
demo: setup
	$(PY) examples/demo.py --out build/demo

test: setup
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

bench-tflm: setup .venv-tflite/.installed
	$(PY) benchmarks/memory_vs_tflm.py
