# Two commands for a fresh machine with Python 3.11: `make run` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= ablations/pool_size.yaml

.PHONY: install run test test-slow bench device-wheels clean

$(BIN)/harness: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU wheel: a bare requirement would pull a multi-GB CUDA build
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/harness

install: $(BIN)/harness

run: install
	$(BIN)/harness run $(CONFIG)

test: install
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/harness bench --retrieval

# wheels the GPU machine lacks (it has no network): see benchmarks/device_bench.sh
DEVICE_WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 faiss-cpu==1.15.1
device-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(DEVICE_WHEELS)

clean:
	rm -rf runs .pytest_cache
