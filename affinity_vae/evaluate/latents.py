"""The latents table (eval/<variant>/latents.parquet), torch-free helpers.

Columns: ``class, split, tomogram, stack_index, x, y, z`` (voxels), ``euler_z1, euler_x,
euler_z2`` (true SHREC ZXZ degrees; for 2D data euler_z1 is the in-plane angle),
``mu_0..mu_{L-1}``, ``logvar_0..``, ``pose_0..pose_{P-1}``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STAR_TO_LATENTS = {"avaeClass": "class", "avaeSplit": "split", "rlnTomoName": "tomogram",
                   "avaeStackIndex": "stack_index", "rlnCoordinateX": "x",
                   "rlnCoordinateY": "y", "rlnCoordinateZ": "z", "avaeEulerZ1": "euler_z1",
                   "avaeEulerX": "euler_x", "avaeEulerZ2": "euler_z2"}


def latents_frame(table: pd.DataFrame, mu: np.ndarray, logvar: np.ndarray,
                  pose: np.ndarray) -> pd.DataFrame:
    """The latents table from the particle STAR rows (N) and the encodings (N, L)/(N, P)."""
    missing = [c for c in STAR_TO_LATENTS if c not in table.columns]
    if missing:
        raise ValueError(f"particle table lacks columns {missing}")
    df = table[list(STAR_TO_LATENTS)].rename(columns=STAR_TO_LATENTS).reset_index(drop=True)
    df["class"] = df["class"].astype(str)
    blocks = {f"mu_{i}": mu[:, i] for i in range(mu.shape[1])}
    blocks |= {f"logvar_{i}": logvar[:, i] for i in range(logvar.shape[1])}
    pose = pose.reshape(len(df), -1)
    blocks |= {f"pose_{i}": pose[:, i] for i in range(pose.shape[1])}
    return pd.concat([df, pd.DataFrame(blocks)], axis=1)


def block(df: pd.DataFrame, prefix: str) -> np.ndarray:
    """The (N, K) array of columns ``<prefix>_0..`` of a latents table (K may be 0)."""
    cols = sorted((c for c in df.columns if c.startswith(prefix + "_")
                   and c[len(prefix) + 1:].isdigit()), key=lambda c: int(c.split("_")[-1]))
    return df[cols].to_numpy(np.float64) if cols else np.zeros((len(df), 0))
