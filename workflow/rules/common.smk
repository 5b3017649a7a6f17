# Shared helpers: config validation, paths of every stage's outputs, the tomogram list.
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

REPO = Path(workflow.basedir).resolve()
# The library is importable in every job (local, conda env or SLURM) without installing it.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [str(REPO)]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
)
sys.path.insert(0, str(REPO))

from affinity_vae.config import check_config  # noqa: E402
from affinity_vae.errors import InputError  # noqa: E402
from affinity_vae.preflight import preflight  # noqa: E402

check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
preflight(config)  # headers, particle lists, class names, boxes: before any job

RUN = f"results/{config['run']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"


def env(stage):
    """The conda env file of a stage (used with --software-deployment-method conda)."""
    return str(REPO / "envs" / f"{stage}.yaml")


def tomograms():
    """Names of the tomograms of the dataset, e.g. ['model_0', 'model_1']."""
    ds = config["dataset"]
    if ds["source"] == "simulate":
        return [f"model_{i}" for i in range(config["simulate"]["n_tomograms"])]
    if ds["source"] == "shrec":
        return list(ds["tomograms"])
    if ds["source"] in IMPORTED_SOURCES:  # read from the project at planning time
        return imported_tomogram_names(ds)
    if (
        ds["source"] == "alphanumeric"
    ):  # one rendered image stack (rule alphanumeric_dataset)
        return ["alphanumeric"]
    return ["imported"]


def tomogram_dir(tomo):
    """Folder holding a tomogram in the SHREC 2021 layout."""
    ds = config["dataset"]
    if ds["source"] == "simulate":
        return f"{RUN}/data/simulated/{tomo}"
    if ds["source"] in IMPORTED_SOURCES:  # written by rule import_tomogram
        return f"{RUN}/data/{ds['source']}/{tomo}"
    return f"{ds['path']}/{tomo}"


# Projects imported per tomogram into the SHREC layout (rule import_tomogram, datasets.smk).
IMPORTED_SOURCES = ("relion", "copick")


def imported_source():
    """True when the dataset is a project imported per tomogram (rule import_tomogram)."""
    return config["dataset"]["source"] in IMPORTED_SOURCES


def imported_tomogram_names(ds):
    """rlnTomoName values (relion) or run names (copick) of the project: light readers."""
    if ds["source"] == "relion":
        from affinity_vae.io.relion import tomogram_names

        return tomogram_names(ds)
    from affinity_vae.io.copick_project import run_names

    return run_names(ds)


def import_inputs(wildcards):
    """The project files a tomogram's import reads (re-import when they change)."""
    ds = config["dataset"]
    if ds["source"] == "relion":
        from affinity_vae.io.relion import read_tomograms

        rel = ds["relion"]
        mrc = read_tomograms(ds)[wildcards.tomo].path
        return [rel["tomograms_star"], rel["particles_star"], str(mrc)]
    return [ds["copick"]["config"]] if ds["copick"]["config"] else []


def all_targets():
    """The metrics and figures; for a RELION 5 or copick project also the test tomograms'
    predictions written back into the user's formats (rule predict)."""
    out = [f"{RUN}/eval/metrics.json", f"{RUN}/figures/table1.md"]
    if config["dataset"]["source"] in IMPORTED_SOURCES:
        names = predict_names()
        out += expand(f"{RUN}/predict/{{name}}_predicted.star", name=names)
        out += expand(list(predict_relion_output().values()), name=names)
    return out


# --- input functions of stage `extract` ---
def extract_tomogram(wildcards):
    """The volume the boxes are cut from: grandmodel.mrc (extract.source grandmodel: the
    noise-free volume, neighbours included), else the denoised tomogram, or the raw
    reconstruction when denoising is disabled."""
    if config["extract"]["source"] == "grandmodel":
        return f"{tomogram_dir(wildcards.tomo)}/grandmodel.mrc"
    if config["denoise"]["enabled"]:
        return f"{RUN}/denoised/{wildcards.tomo}.mrc"
    return f"{tomogram_dir(wildcards.tomo)}/reconstruction.mrc"


def extract_inputs(wildcards):
    """What a tomogram's boxes are made from: the class densities of the structures stage
    (extract.source isolated: each particle rendered alone, no tomogram read), else the
    volume of extract_tomogram."""
    if config["extract"]["source"] == "isolated":
        return {"structures": f"{RUN}/structures"}
    return {"tomogram": extract_tomogram(wildcards)}


def boxes_without_microscope():
    """True when the boxes carry no CTF and no missing wedge: crops of the noise-free
    grandmodel or particles rendered alone (extract.source grandmodel / isolated)."""
    return config["extract"]["source"] in ("grandmodel", "isolated")


def subtomo_folder_files(wildcards):
    """Every particle file (and classes.csv) of the imported folder, so changes re-run it."""
    if config["dataset"]["source"] != "subtomo_folder":
        return []
    root = Path(config["dataset"]["path"])
    return sorted(
        str(p)
        for sub in (root, root / "test")
        if sub.is_dir()
        for p in sub.iterdir()
        if p.suffix.lower() in (".mrc", ".mrcs") or p.name == "classes.csv"
    )


def all_locations(wildcards):
    """Every particle_locations.txt of the dataset: the class list spans the whole dataset."""
    return [f"{tomogram_dir(t)}/particle_locations.txt" for t in tomograms()]


# dataset.source subtomo_folder: one `imported` stack from the folder of particle files


# --- input functions of stage `affinity` ---
def affinity_source(wildcards):
    """The matrix affinity.csv is made from: the chosen method's CSV, or affinity.path."""
    if config["affinity"]["method"] == "file":
        path = config["affinity"]["path"]
        return {"user": path} if path else {}
    return {"matrix": f"{RUN}/affinity/{config['affinity']['method']}.csv"}


def affinity_targets():
    """affinity.csv, plus both computed matrices unless the matrix comes from a file."""
    out = [f"{RUN}/affinity/affinity.csv"]
    if config["affinity"]["method"] != "file":
        out += expand(f"{RUN}/affinity/{{method}}.csv", method=["soap", "fsc"])
    return out


# --- input functions of stage `train` ---
def train_variants():
    """The run's models: avae, plus the beta-VAE baseline bvae when evaluate.baseline is true
    (trained, evaluated and reported: train.smk, evaluate.smk, report.smk)."""
    return ["avae", "bvae"] if config["evaluate"]["baseline"] else ["avae"]


def eval_is_2d():
    """True for 2D data (the alphanumeric glyph experiment): evaluate, figures and the
    template-matching baseline treat it apart."""
    return config["dataset"]["source"] == "alphanumeric"


# --- the data's imaging settings (train: augmentation wedge and GMD forward model; evaluate) ---
def data_tilt_range():
    """[first, last] tilt angle in degrees of the tilt series behind the boxes (the missing
    wedge, tilt axis y), or None: unknown (real data without dataset.tilt_range) or 2D data.
    The one place: simulate.tilt_range for simulated data, dataset.tilt_range for real data.
    """
    ds = config["dataset"]
    if ds["source"] == "alphanumeric" or boxes_without_microscope():
        return None  # 2D images, noise-free crops or isolated renders: no missing wedge
    if ds["source"] == "simulate":
        for key in ("tilt_range", "defocus_um"):
            if ds[key] is not None:
                raise InputError(
                    f"config key 'dataset.{key}' is for real data; simulated data take "
                    f"simulate.{key} -- remove dataset.{key}"
                )
        return [float(t) for t in config["simulate"]["tilt_range"]]
    return None if ds["tilt_range"] is None else [float(t) for t in ds["tilt_range"]]


def data_microscope():
    """CTF settings {defocus_um, voltage_kv, cs_mm, amplitude_contrast} of the data (simulate
    section, or the dataset keys for real data), or None when the defocus is unknown, the
    data are 2D images or the boxes carry no CTF (extract.source grandmodel or
    isolated)."""
    ds = config["dataset"]
    if ds["source"] == "alphanumeric" or boxes_without_microscope():
        return None
    src = config["simulate"] if ds["source"] == "simulate" else ds
    if src["defocus_um"] is None:
        return None
    keys = ("defocus_um", "voltage_kv", "cs_mm", "amplitude_contrast")
    return {k: float(src[k]) for k in keys}


def box_voxel_size():
    """Voxel size in A of the extracted boxes (extract.bin_to resamples them), or None when
    only the particle files know it (subtomo_folder with bin_to)."""
    ds, ex = config["dataset"], config["extract"]
    if ex["bin_to"] is None:
        return float(ds["voxel_size"])
    if ds["source"] == "subtomo_folder":
        return None
    return float(ds["voxel_size"]) * ex["box_size"] / ex["bin_to"]


def gmd_physics():
    """Settings of the GMD decoder's forward model (model.gmd_forward), handed to train as
    model.gmd_physics (saved with the model); None when the forward model is off. A missing
    setting is a one-line error here, before any job."""
    from affinity_vae.imaging import check_forward

    m = config["model"]
    if m["decoder"] != "gmd" or m["gmd_forward"] == "none":
        return None
    ctf_keys = ("defocus_um", "voltage_kv", "cs_mm", "amplitude_contrast")
    physics = {
        "tilt_range": data_tilt_range(),
        "voxel_size": box_voxel_size(),
        "invert": bool(config["extract"]["invert"]),
        **(data_microscope() or dict.fromkeys(ctf_keys)),
    }
    ndim = 2 if config["dataset"]["source"] == "alphanumeric" else 3
    check_forward(m["gmd_forward"], physics, ndim)
    return physics


# --- input functions of stage `denoise` ---
def denoise_input(wildcards):
    return f"{tomogram_dir(wildcards.tomo)}/reconstruction.mrc"


def denoise_mem_mb(wildcards, input):
    """Peak memory: one tile (~1.2 kB per voxel of (patch + 24)^3) + ~4.5x the tomogram."""
    tile_mb = 1.2 * (config["denoise"]["patch_size"] + 24) ** 3 / 1024
    return int(1000 + tile_mb + 4.5 * input.size_mb)
