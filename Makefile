# Two commands: `make demo` runs the whole pipeline on the embedded default config,
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to a CPU-capable build; on a GPU node use e.g.
#   make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH  ?= torch==2.13.0
CORES  ?= all
CONFIG ?= config/config.yaml

.PHONY: demo test venv clean benchmark

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) "setuptools<81"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m affinity_vae.where $(CONFIG)

test: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests

benchmark: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks

clean:
	rm -rf results .snakemake
