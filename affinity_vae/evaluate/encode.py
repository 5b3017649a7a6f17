"""Encode every particle with a trained model (the table itself: evaluate/latents.py)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def encode(model: torch.nn.Module, X: np.ndarray, batch_size: int = 256,
           device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode boxes X (N, D, H, W) or (N, H, W) -> mu (N, L), logvar (N, L), pose (N, P)."""
    model.eval()
    outs: list[list[np.ndarray]] = [[], [], []]
    for start in tqdm(range(0, len(X), batch_size), desc="encode", leave=False):
        xb = torch.as_tensor(np.asarray(X[start:start + batch_size], np.float32)).unsqueeze(1)
        for o, t in zip(outs, model.encode(xb.to(device))):
            o.append(t.detach().cpu().numpy().astype(np.float32))
    return tuple(np.concatenate(o) if o else np.zeros((0, 0), np.float32)  # type: ignore
                 for o in outs)
