"""Stage `train`: fit the Affinity-VAE (variant avae) or the beta-VAE baseline (variant bvae).

Loss per batch: recon + beta * KL + gamma * S (paper Eq. 1-2), beta and gamma annealed per epoch
(affinity_vae.model.schedules); on 2D data optionally + w * pose consistency (the batch is also
encoded rotated by known random angles and the first pose dimension must follow them; see
affinity_vae.model.losses.pose_consistency_loss). Checkpoints every ``train.checkpoint_every``
epochs go to ``<model dir>/checkpoints/``; a re-run resumes from the newest checkpoint whose
config hash matches, and ends with the same weights as an uninterrupted run (same seed, same
threads).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from affinity_vae.data import (
    TrainingData,
    augment,
    impose_wedge,
    load_subtomos,
    random_rotation_matrices,
    rotate_inplane,
    rotate_volumes,
    training_data,
    training_wedge,
)
from affinity_vae.errors import InputError
from affinity_vae.io.atomic import atomic_path
from affinity_vae.io.mrc import read_voxel_size
from affinity_vae.model import losses, schedules
from affinity_vae.model.gmd import quaternion_to_matrix
from affinity_vae.model.io import (
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    save_trained,
    set_rng_state,
)
from affinity_vae.model.pose_head import rotation_consistency_loss
from affinity_vae.model.vae import AffinityVAE, check_architecture

log = logging.getLogger(__name__)

#: Keys that do not change the result and so are not part of the checkpoint hash.
_NOT_HASHED = ("checkpoint_every", "keep_checkpoints", "device", "compile")
TERMS = ("recon", "kl", "affinity", "pose", "total")
HISTORY_COLUMNS = (["epoch", "beta", "gamma"] + [f"train_{t}" for t in TERMS]
                   + [f"val_{t}" for t in TERMS] + ["seconds"])


def variant_configs(model_cfg: dict[str, Any], train_cfg: dict[str, Any], variant: str
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Configs of a variant: ``avae`` as given; ``bvae`` (beta-VAE baseline) with gamma 0 and
    pose_dims 0, everything else the same. Both configs are full, validated sections (defaults
    filled from workflow/schemas; library callers: ``affinity_vae.config.schema_defaults``)."""
    model_cfg, train_cfg = copy.deepcopy(dict(model_cfg)), copy.deepcopy(dict(train_cfg))
    if variant == "bvae":
        model_cfg["pose_dims"] = 0
        train_cfg["gamma"] = {**train_cfg["gamma"], "kind": "flat", "min": 0.0, "max": 0.0}
    elif variant != "avae":
        raise ValueError(f"variant must be avae or bvae, got {variant!r}")
    return model_cfg, train_cfg


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("config key 'train.device' (or 'device') is cuda but no CUDA device "
                         "is available -- set it to auto or cpu")
    return torch.device(name)


def config_hash(model_cfg: dict, train_cfg: dict, seed: int, data: TrainingData) -> str:
    """Hash of everything that determines the trained weights (configs, seed, data)."""
    h = hashlib.sha1()
    tcfg = {k: v for k, v in train_cfg.items() if k not in _NOT_HASHED}
    h.update(json.dumps([model_cfg, tcfg, seed, data.classes,
                         data.affinity.tolist(), list(data.x.shape), list(data.val_x.shape)],
                        sort_keys=True, default=str).encode())
    for t in (data.x, data.labels, data.val_x, data.val_labels):
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of config key ``train.amp`` (none | bf16 | fp16) on ``device``: None
    for none, and on CPU (ignored there, logged: slower without bf16 hardware; see the schema)."""
    if amp == "none":
        return None
    if device.type != "cuda":
        log.info("train.amp %s ignored on %s: training runs in float32", amp, device)
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _make_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    kind, lr, wd = cfg["optimizer"], cfg["learning_rate"], cfg["weight_decay"]
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    raise InputError(f"config key 'train.optimizer': unknown {kind!r} -- use adam, adamw or sgd")


def _checkpoints(folder: Path, key: str) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints of this config hash, oldest first."""
    out = []
    for p in folder.glob(f"ckpt-{key}-e*.pt"):
        m = re.fullmatch(rf"ckpt-{key}-e(\d+)\.pt", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


CHECKPOINT_KEYS = ("model", "optimizer", "rng", "generator", "history", "epoch")


def newest_readable_checkpoint(folder: Path, key: str) -> tuple[dict, Path] | None:
    """(checkpoint, path) of the newest readable checkpoint of this config hash, or None.

    A checkpoint that cannot be read (truncated, not a torch file, keys missing) is renamed
    ``<name>.unreadable`` with one warning line, and the previous one is tried: a damaged file
    never blocks a re-run, and training resumes from the newest good state (or from scratch).
    """
    for _, path in reversed(_checkpoints(folder, key)):
        try:
            ck = load_checkpoint(path)
            if not isinstance(ck, dict) or not all(k in ck for k in CHECKPOINT_KEYS):
                raise ValueError("keys missing")
        except Exception as exc:  # noqa: BLE001 (any damage: set the file aside, go on)
            aside = path.with_name(path.name + ".unreadable")
            path.replace(aside)
            log.warning("%s: unreadable checkpoint (%s) moved to %s; resuming from the previous "
                        "one", path, type(exc).__name__, aside.name)
            continue
        return ck, path
    return None


def random_rotations(n: int, max_angle: float, gen: torch.Generator) -> torch.Tensor:
    """n rotation matrices (n, 3, 3): uniform over SO(3) when ``max_angle`` >= 180 degrees
    (data.random_rotation_matrices), else a uniform random axis with an angle uniform in
    [0, max_angle] degrees."""
    if max_angle >= 180:
        return random_rotation_matrices(n, gen)
    axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    half = 0.5 * torch.rand(n, generator=gen, dtype=torch.float64) * math.radians(max_angle)
    q = torch.cat([half.cos().unsqueeze(1), half.sin().unsqueeze(1) * axis], dim=1)
    return quaternion_to_matrix(q).float()


def _pose_draws(cfg: dict, model, n: int, gen: torch.Generator):
    """The known rotations of the pose-consistency term, or None when the term is off (weight
    0 or no pose channel; then nothing is drawn from ``gen``): 2D data, in-plane angles (n,)
    in radians within +-max_angle; 3D data, two uniformly random rotations (2, n, 3, 3)
    applied to the batch."""
    pc = cfg["pose_consistency"]
    if pc["weight"] <= 0 or model.pose_dims == 0:
        return None
    if len(model.box) == 3:
        return random_rotations(2 * n, 180.0, gen).view(2, n, 3, 3)
    return (torch.rand(n, generator=gen) * 2 - 1) * math.radians(pc["max_angle"])


def _losses(model, x, labels, affinity, cfg, beta, gamma, draws=None, wedge=None):
    """Loss terms (recon, kl, affinity, pose, total) of a batch; ``draws`` (from _pose_draws)
    turns the pose-consistency term on (None: it is 0). 3D: the batch rotated by two known
    rotations g1, g2 (and, with ``wedge`` (D, H, W) a Fourier mask, given back the
    microscope-frame missing wedge), and the rotation branch must turn by g2 g1^T between them."""
    x_hat, mu, logvar, pose = model(x)
    rec = losses.reconstruction_loss(x_hat, x, cfg["recon_loss"])
    kl = losses.kl_divergence(mu, logvar)
    aff = losses.affinity_loss(mu, labels, affinity)
    total = rec + beta * kl + gamma * aff
    pc = cfg["pose_consistency"]
    if draws is None:
        pose_term = rec.new_zeros(())
    elif draws.dim() == 4:
        g1, g2 = draws.to(x.device)
        x1, x2 = rotate_volumes(x, g1), rotate_volumes(x, g2)
        if wedge is not None:
            x1, x2 = impose_wedge(x1, wedge), impose_wedge(x2, wedge)
        v1, v2 = model.encoder.pose_vectors(x1), model.encoder.pose_vectors(x2)
        pose_term = rotation_consistency_loss(v1, v2, g2 @ g1.transpose(1, 2),
                                              pc["orthogonality"])
        total = total + pc["weight"] * pose_term
    else:
        angles = draws.to(x.device, x.dtype)
        _, _, pose_rot = model.encode(rotate_inplane(x, angles))
        pose_term = losses.pose_consistency_loss(pose, pose_rot,
                                                 angles * model.inplane_pose_sense, pc["centre"])
        total = total + pc["weight"] * pose_term
    return rec, kl, aff, pose_term, total


def run_epoch(model, opt, data: TrainingData, cfg: dict, beta: float, gamma: float,
              gen: torch.Generator, device: torch.device,
              wedge: torch.Tensor | None = None, amp: torch.dtype | None = None,
              scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One pass over the shuffled training set; returns the sample-weighted mean losses.

    ``model`` may be a ``torch.compile``d module (train.compile); ``amp`` (amp_dtype) runs the
    forward pass and losses under autocast, ``scaler`` (float16) scales the loss."""
    model.train()
    n, bs = data.x.shape[0], cfg["batch_size"]
    perm = torch.randperm(n, generator=gen)
    affinity = data.affinity.to(device)
    sums, seen = torch.zeros(len(TERMS), dtype=torch.float64), 0
    for start in range(0, n, bs):
        idx = perm[start:start + bs]
        if len(idx) < 2 and seen:   # batch-norm and the affinity term need >= 2 samples
            break
        xb = augment(data.x[idx], cfg["augment"], gen, wedge).to(device, non_blocking=True)
        draws = _pose_draws(cfg, model, len(idx), gen)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            terms = _losses(model, xb, data.labels[idx].to(device), affinity, cfg, beta, gamma,
                            draws, wedge)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms[-1]).backward()
            scaler.step(opt)
            scaler.update()
        else:
            terms[-1].backward()
            opt.step()
        sums += torch.stack([t.detach().double() for t in terms]).cpu() * len(idx)
        seen += len(idx)
    return dict(zip(TERMS, (sums / max(seen, 1)).tolist()))


@torch.no_grad()
def evaluate_losses(model, x, labels, affinity, cfg, beta, gamma, device,
                    batch_size: int = 128, wedge: torch.Tensor | None = None
                    ) -> dict[str, float]:
    """Mean losses on (x, labels) in eval mode (z = mu, no augmentation; the pose-consistency
    angles from a fixed seed, the same every epoch); NaN when empty."""
    if x.shape[0] == 0:
        return dict.fromkeys(TERMS, float("nan"))
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sums, n = torch.zeros(len(TERMS), dtype=torch.float64), 0
    for s in range(0, x.shape[0], batch_size):
        xb, lb = x[s:s + batch_size].to(device), labels[s:s + batch_size].to(device)
        draws = _pose_draws(cfg, model, len(xb), gen)
        terms = _losses(model, xb, lb, affinity.to(device), cfg, beta, gamma, draws, wedge)
        sums += torch.stack([t.double().cpu() for t in terms]) * len(xb)
        n += len(xb)
    return dict(zip(TERMS, (sums / n).tolist()))


def fit(data: TrainingData, model_cfg: dict[str, Any], train_cfg: dict[str, Any], seed: int,
        checkpoint_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
        progress: bool = True, tilt_range: tuple[float, float] | None = None
        ) -> tuple[AffinityVAE, pd.DataFrame]:
    """Train a model on ``data``; resume from ``checkpoint_dir`` when it holds a checkpoint of
    the same config hash. ``tilt_range`` (degrees, tilt axis y; None = unknown) gives the
    microscope-frame missing wedge that augmentation and the 3D pose-consistency term
    re-impose on rotated boxes (train.augment_wedge). Returns the model (eval mode, on CPU)
    and the history (one row per epoch, columns HISTORY_COLUMNS)."""
    cfg = train_cfg
    model_cfg = check_architecture(model_cfg, data.box)
    if (cfg["pose_consistency"]["weight"] > 0 and len(data.box) == 3
            and model_cfg["pose_head"] != "rotation" and model_cfg["pose_dims"]):
        # (the moments head has no parameters: nothing for the term to train)
        raise InputError("config key 'train.pose_consistency.weight': on 3D data the "
                         "pose-consistency term needs a rotation pose -- set model.pose_head: "
                         "rotation (or the weight to 0)")
    device = torch.device(device)
    wedge_t = training_wedge(data.box, tilt_range, cfg["augment_wedge"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AffinityVAE(model_cfg, data.box).to(device)
    opt = _make_optimizer(model, cfg)
    amp = amp_dtype(cfg["amp"], device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    epochs = int(cfg["epochs"])
    betas, gammas = schedules.values(cfg["beta"], epochs), schedules.values(cfg["gamma"], epochs)
    history: list[dict[str, float]] = []
    start = 0
    key = config_hash(model_cfg, {**cfg, "tilt_range": tilt_range}, seed, data)
    folder = Path(checkpoint_dir) if checkpoint_dir else None
    if folder is not None:
        for stale in folder.glob(".ckpt-*.tmp-*"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
    if folder is not None and (ck_path := newest_readable_checkpoint(folder, key)):
        ck, path = ck_path
        load_state(model, ck["model"], path)
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        gen.set_state(ck["generator"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        history = [dict(zip(ck["history"]["columns"], row)) for row in ck["history"]["rows"]]
        start = int(ck["epoch"])
        log.info("resuming from %s (epoch %d of %d)", path, start, epochs)
    elif folder is not None and any(folder.glob("ckpt-*.pt")):
        log.info("ignoring checkpoints in %s: they belong to a different config or data", folder)
    log.info("training %s decoder, %d train / %d validation particles, %d classes, box %s, "
             "%d epochs, device %s, %d thread(s)", model_cfg["decoder"], len(data.x),
             len(data.val_x), len(data.classes), data.box, epochs, device, torch.get_num_threads())
    # train.compile: the training forward pass only (a wrapper; ``model`` and its state dict
    # stay as they are, validation runs eagerly and does not trigger a second compilation)
    step_model = torch.compile(model) if cfg["compile"] else model
    bar = tqdm(range(start, epochs), desc="train", unit="epoch", disable=not progress,
               initial=start, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        beta, gamma = betas[epoch], gammas[epoch]
        tr = run_epoch(step_model, opt, data, cfg, beta, gamma, gen, device, wedge_t, amp, scaler)
        va = evaluate_losses(model, data.val_x, data.val_labels, data.affinity, cfg, beta,
                             gamma, device, wedge=wedge_t)
        if not math.isfinite(tr["total"]):
            raise RuntimeError(f"loss became {tr['total']} at epoch {epoch + 1}; lower "
                               f"train.learning_rate")
        row = {"epoch": epoch + 1, "beta": beta, "gamma": gamma,
               **{f"train_{k}": v for k, v in tr.items()},
               **{f"val_{k}": v for k, v in va.items()}, "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(recon=f"{tr['recon']:.4f}", aff=f"{tr['affinity']:.3f}")
        log.info("epoch %d/%d  beta %.3g gamma %.3g  train recon %.4f kl %.3f affinity %.4f "
                 "pose %.4f | val recon %.4f affinity %.4f pose %.4f  (%.1f s)", epoch + 1,
                 epochs, beta, gamma, tr["recon"], tr["kl"], tr["affinity"], tr["pose"],
                 va["recon"], va["affinity"], va["pose"], row["seconds"])
        done = epoch + 1
        if folder is not None and done < epochs and done % max(1, cfg["checkpoint_every"]) == 0:
            save_checkpoint(folder / f"ckpt-{key}-e{done:05d}.pt", {
                "epoch": done, "config_hash": key, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "rng": rng_state(),
                "generator": gen.get_state(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "schedule": {"beta": cfg["beta"], "gamma": cfg["gamma"], "epochs": epochs},
                "history": {"columns": HISTORY_COLUMNS,
                            "rows": [[r[c] for c in HISTORY_COLUMNS] for r in history]}})
            for _, old in _checkpoints(folder, key)[:-max(1, cfg["keep_checkpoints"])]:
                old.unlink(missing_ok=True)
    model = model.cpu().eval()
    return model, pd.DataFrame(history, columns=HISTORY_COLUMNS)


def plot_curves(history: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    """Training curves (train solid, validation dashed) and the beta/gamma schedules."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [t for t in TERMS if t != "pose" or history["train_pose"].abs().sum() > 0]
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(3.6 * (len(terms) + 1), 3.4))
    for ax, term in zip(axes, terms):
        ax.plot(history["epoch"], history[f"train_{term}"], label="train")
        if history[f"val_{term}"].notna().any():
            ax.plot(history["epoch"], history[f"val_{term}"], "--", label="validation")
        ax.set(title=term, xlabel="epoch")
        ax.legend(fontsize=8)
    axes[-1].plot(history["epoch"], history["beta"], color="C0")
    axes[-1].set(title="loss weights", xlabel="epoch")
    axes[-1].set_ylabel("beta (KL)", color="C0")
    twin = axes[-1].twinx()
    twin.plot(history["epoch"], history["gamma"], color="C1")
    twin.set_ylabel("gamma (affinity)", color="C1")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(smk: Any) -> None:
    """Rule train_model: read subtomos + affinity, train variant ``smk.wildcards.variant``,
    write model.pt, history.csv, curves.png."""
    variant = smk.wildcards.variant
    model_cfg, cfg = variant_configs(smk.params.model, smk.params.train, variant)
    seed = int(smk.params.seed)
    threads = max(1, int(smk.threads))
    torch.set_num_threads(threads)
    device = resolve_device(smk.params.device if cfg["device"] == "inherit" else cfg["device"])
    X, table = load_subtomos(list(smk.input.stacks), list(smk.input.stars))
    data = training_data(X, table, smk.input.affinity, cfg["validation_fraction"], seed)
    model_cfg = check_architecture(model_cfg, data.box)
    del X
    out = Path(smk.output.model)
    tilt_range = getattr(smk.params, "tilt_range", None)
    model, history = fit(data, model_cfg, cfg, seed, out.parent / "checkpoints", device,
                         tilt_range=tuple(tilt_range) if tilt_range else None)
    meta = {"classes": data.classes, "variant": variant, "box": list(data.box),
            "ndim": len(data.box), "latent_dims": model_cfg["latent_dims"],
            "pose_dims": model_cfg["pose_dims"], "model": model_cfg, "train": cfg,
            "affinity": data.affinity.tolist(), "seed": seed, "epochs": cfg["epochs"],
            "voxel_size": read_voxel_size(smk.input.stacks[0]),
            "n_train": len(data.x), "n_validation": len(data.val_x)}
    with atomic_path(smk.output.history) as tmp:
        history.to_csv(tmp, index=False)
    plot_curves(history, smk.output.curves, f"{variant}: {model_cfg['decoder']} decoder")
    save_trained(out, model, meta)
    for p in (out.parent / "checkpoints").glob("ckpt-*.pt"):
        p.unlink()
    log.info("wrote %s (%d epochs)", out, len(history))
