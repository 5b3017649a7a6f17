"""The Affinity-VAE model (stage `train`; also used by evaluate and predict).

API (contract in DESIGN.md):
    load_trained(path, device="cpu") -> (model, meta)
    model.encode(x) -> (mu, logvar, pose)    x: float tensor (N, 1, D, H, W) or (N, 1, H, W)
    model.decode(z, pose) -> x
"""

from affinity_vae.model.io import load_trained, save_trained
from affinity_vae.model.vae import AffinityVAE, check_architecture

__all__ = ["AffinityVAE", "check_architecture", "load_trained",
           "save_trained"]
