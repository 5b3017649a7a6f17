# Stage `predict`: a trained model applied to new tomograms -> latents, classes ("unknown,
# nearest X" for poor fits) and poses as STAR (affinity_vae/predict.py; docs/evaluate.md), also
# written back as a RELION 5 particles STAR (and copick picks for a copick dataset).


# --- input functions: which tomograms, where their boxes and headers come from ---
def predict_inputs():
    """{name: (tomogram, coordinates)} of predict.tomograms; empty = the run's test tomograms."""
    return {
        t["name"]: (t["tomogram"], t["coordinates"])
        for t in config["predict"]["tomograms"]
    }


def predict_raw_tomogram(wildcards):
    """The MRC of a configured new tomogram, as given."""
    return predict_inputs()[wildcards.name][0]


def predict_coordinates(wildcards):
    return predict_inputs()[wildcards.name][1]


def predict_tomogram(wildcards):
    """What predict_extract cuts from: the new tomogram denoised like the training data
    (rule predict_denoise) when denoise.enabled and predict.denoise, else as given."""
    if config["denoise"]["enabled"] and config["predict"]["denoise"]:
        return f"{RUN}/predict/{wildcards.name}_denoised.mrc"
    return predict_raw_tomogram(wildcards)


def predict_new_names():
    """A wildcard pattern matching only the configured new tomograms (none: matches nothing)."""
    import re

    return "|".join(re.escape(n) for n in predict_inputs()) or "(?!)"


def predict_names():
    """Configured new tomograms, else the run's test tomograms (else all its stacks)."""
    test = [t for t in config["dataset"]["splits"]["test"] or [] if t in tomograms()]
    return list(predict_inputs()) or test or tomograms()


def predict_boxes(wildcards):
    """Boxes of a new tomogram (cut by predict_extract), or the run's own extracted stack."""
    if wildcards.name in predict_inputs():
        d = f"{RUN}/predict/{wildcards.name}"
    else:
        d = f"{RUN}/subtomos/{wildcards.name}"
    return {"stack": f"{d}.mrcs", "star": f"{d}.star"}


def predict_header(wildcards):
    """The tomogram whose header gives the RELION write-back its geometry (size, voxel size):
    a configured new tomogram, or the run's own tomogram (none for particle-file datasets).
    """
    if wildcards.name in predict_inputs():
        return {"header": predict_raw_tomogram(wildcards)}
    if config["dataset"]["source"] in ("subtomo_folder", "alphanumeric"):
        return {}
    return {"header": f"{tomogram_dir(wildcards.name)}/reconstruction.mrc"}


def predict_relion_output():
    """{relion: predict/<name>_relion.star} unless the predicted particles have no tomogram
    (a subtomo_folder or alphanumeric dataset predicting its own test particles)."""
    no_tomogram = config["dataset"]["source"] in ("subtomo_folder", "alphanumeric")
    if no_tomogram and not config["predict"]["tomograms"]:
        return {}
    return {"relion": f"{RUN}/predict/{{name}}_relion.star"}


rule predict_denoise:
    input:
        predict_raw_tomogram,
    output:
        f"{RUN}/predict/{{name}}_denoised.mrc",
    log:
        f"{LOGS}/predict/{{name}}_denoise.log",
    benchmark:
        f"{BENCH}/predict/{{name}}_denoise.tsv"
    wildcard_constraints:
        name=predict_new_names(),
    conda:
        env("denoise")
    resources:
        mem_mb=denoise_mem_mb,
    params:
        denoise=config["denoise"],
        device=config["device"],
    script:
        "../../scripts/denoise.py"


rule predict_extract:
    input:
        tomogram=predict_tomogram,
        coordinates=predict_coordinates,
    output:
        stack=f"{RUN}/predict/{{name}}.mrcs",
        star=f"{RUN}/predict/{{name}}.star",
    log:
        f"{LOGS}/predict/{{name}}_extract.log",
    benchmark:
        f"{BENCH}/predict/{{name}}_extract.tsv"
    wildcard_constraints:
        name=predict_new_names(),
    conda:
        env("extract")
    params:
        extract=config["extract"],
        voxel_size=config["dataset"]["voxel_size"],
    script:
        "../../scripts/predict_extract.py"


rule predict_particles:
    input:
        unpack(predict_boxes),
        unpack(predict_header),
        model=f"{RUN}/model/{config['predict']['variant']}/model.pt",
        latents=f"{RUN}/eval/{config['predict']['variant']}/latents.parquet",
        # pose.frames: predicted angles go into each class's structure frame
        metrics=f"{RUN}/eval/{config['predict']['variant']}/metrics.json",
    output:
        **predict_relion_output(),
        star=f"{RUN}/predict/{{name}}_predicted.star",
        latents=f"{RUN}/predict/{{name}}_latents.parquet",
    log:
        f"{LOGS}/predict/{{name}}.log",
    benchmark:
        f"{BENCH}/predict/{{name}}.tsv"
    conda:
        env("evaluate")
    params:
        predict=config["predict"],
        evaluate=config["evaluate"],
        dataset=config["dataset"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../../scripts/predict.py"


rule predict:
    input:
        expand(f"{RUN}/predict/{{name}}_predicted.star", name=predict_names()),
        expand(
            list(predict_relion_output().values()),
            name=predict_names(),
        ),
