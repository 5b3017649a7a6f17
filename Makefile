# Two commands: `make demo` runs the whole pipeline on the embedded default config,
# `make test` runs the test suite. Both create .venv on first use. `make paper` regenerates the
# paper's experiments into results/paper/ (docs/paper.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to a CPU-capable build; on a GPU node use e.g.
#   make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH  ?= torch==2.13.0
CORES  ?= all
CONFIG ?= config/config.yaml

.PHONY: demo test lint venv clean benchmark benchmark-quick paper paper-quick

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
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q --durations=12 -m slow $(SLOW_ORDER); slow=$$?; \
	test $$fast -eq 0 -a $$slow -eq 0

# snakemake --lint, snakefmt, ruff (pyproject [tool.ruff]) and mypy ([tool.mypy]); part of make test
lint: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q tests/test_lint.py

# The paper's SHREC runs (config/paper/) and Fig. 2, then results/paper/ (Table 1, fig2..fig7).
# PAPER_STRUCTURES=DIR: a local folder of <id>.pdb/<id>.mrc in place of RCSB downloads;
# PAPER_DATA=DIR: a real SHREC 2021 download in place of the simulated tomograms;
# PAPER_CORES cores, PAPER_JOBS runs at a time after the first.
PAPER_CORES      ?= 2
PAPER_JOBS       ?= 2
PAPER_STRUCTURES ?=
PAPER_DATA       ?=
PAPER_ARGS = --cores $(PAPER_CORES) --jobs $(PAPER_JOBS) \
	$(if $(PAPER_STRUCTURES),--structures "$(PAPER_STRUCTURES)") $(if $(PAPER_DATA),--data "$(PAPER_DATA)")
paper: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m affinity_vae.paper run $(PAPER_ARGS)

# The reduced CI variant (tests/configs/paper_quick/): results/paper_quick/ in minutes.
paper-quick: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m affinity_vae.paper run --quick $(PAPER_ARGS)

# Every figure, the scaling tables and BENCHMARKS.md (hours on 2 cores); benchmark-quick: small sizes.
benchmark: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks

benchmark-quick: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks --quick

clean:
	rm -rf results .snakemake
