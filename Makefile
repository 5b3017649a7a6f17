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

# Fast tests first; then the end-to-end (`slow`) ones, the SLURM run first: it makes the tiny run
# (results/tiny) through sbatch, and the re-run, report and other end-to-end tests reuse it.
SLOW_FIRST := tests/test_slurm.py tests/test_rerun.py
SLOW_ORDER := $(SLOW_FIRST) $(filter-out $(SLOW_FIRST),$(sort $(wildcard tests/test_*.py)))
test: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow" tests; fast=$$?; \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m slow $(SLOW_ORDER); slow=$$?; \
	test $$fast -eq 0 -a $$slow -eq 0

benchmark: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks

clean:
	rm -rf results .snakemake
