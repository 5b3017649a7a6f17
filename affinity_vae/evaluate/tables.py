"""The files the evaluate rules write (strict JSON, CSV, atomically) and the structures
manifest they read. The affinity CSV is read by affinity_vae.io.affinity_csv.read_affinity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from affinity_vae.io.atomic import atomic_path


def write_json(path: str | Path, data: Any) -> None:
    """Write strict JSON atomically (NaN/inf become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2, default=_plain,
                                  allow_nan=False) + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    return o


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_csv(path: str | Path, df: pd.DataFrame, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def read_manifest(path: str | Path | None) -> pd.DataFrame | None:
    """structures/manifest.csv (``path`` may be the structures folder); None when absent."""
    if not path:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"class": str, "family": str}, keep_default_na=False)
