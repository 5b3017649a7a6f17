# Rule `template_match`: the template-matching baseline (affinity_vae/evaluate/tm.py) on the
# test particles the models are scored on; eval/tm/ is a column of Table 1 (3D data, when
# evaluate.tm.enabled). physics: what the data did to a density (missing wedge, CTF, contrast).


def tm_enabled():
    """True when template matching runs: evaluate.tm.enabled, 3D data, and templates named
    like the particles' classes: simulated or SHREC data, or structures given by the user
    (structures.source dir/rcsb; a class without a density is then a one-line error)."""
    known = config["dataset"]["source"] in ("simulate", "shrec")
    given = config["structures"]["source"] != "generated"
    return (
        bool(config["evaluate"]["tm"]["enabled"])
        and not eval_is_2d()
        and (known or given)
    )


def tm_metrics():
    """eval/tm/metrics.json when TM runs, else nothing (an input of figures_build)."""
    return [f"{RUN}/eval/tm/metrics.json"] if tm_enabled() else []


def tm_physics():
    """The data's filter for the templates: tilt range (missing wedge), CTF settings, whether
    the raw particles are dark (tomogram crops; not grandmodel/isolated), extract.invert.
    """
    return {
        "tilt_range": data_tilt_range(),
        "microscope": data_microscope(),
        "dark": not boxes_without_microscope(),
        "invert": bool(config["extract"]["invert"]),
    }


rule template_match:
    input:
        stacks=expand(f"{RUN}/subtomos/{{tomo}}.mrcs", tomo=tomograms()),
        stars=expand(f"{RUN}/subtomos/{{tomo}}.star", tomo=tomograms()),
        affinity=f"{RUN}/affinity/affinity.csv",
        structures=f"{RUN}/structures",
    output:
        metrics=f"{RUN}/eval/tm/metrics.json",
        predictions=f"{RUN}/eval/tm/predictions.csv",
        confusion=f"{RUN}/eval/tm/confusion.csv",
        confusion_norm=f"{RUN}/eval/tm/confusion_norm.csv",
        confusion_png=report(
            f"{RUN}/eval/tm/confusion.png",
            caption="../report/tm.rst",
            category="2. Evaluation",
            subcategory="TM",
            labels={"model": "TM", "figure": "confusion matrix (normalised)"},
        ),
        poses=f"{RUN}/eval/tm/poses.star",
    log:
        f"{LOGS}/evaluate/tm.log",
    benchmark:
        f"{BENCH}/evaluate/tm.tsv"
    conda:
        env("evaluate")
    params:
        tm=config["evaluate"]["tm"],
        evaluate=config["evaluate"],
        report=config["report"],
        seed=config["seed"],
        physics=tm_physics(),
    script:
        "../../scripts/template_match.py"
