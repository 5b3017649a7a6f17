# Helper functions of the predict rules (predict.smk, which includes this file): which
# tomograms, where their boxes and headers come from.


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
