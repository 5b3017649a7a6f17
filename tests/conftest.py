"""Shared fixtures: paths to the repo, the shared SHREC structures, and the venv's tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "shrec2021-structures"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shrec_structures() -> Path:
    """The 10 PDBs and 13 maps of the SHREC 2021 classes in ../shared (never copied here)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


def snakemake_cmd(*args: str) -> list[str]:
    """The venv's snakemake with the given arguments, run from the repo root."""
    return [str(BIN / "snakemake"), *args]


os.environ.setdefault("MPLBACKEND", "Agg")
