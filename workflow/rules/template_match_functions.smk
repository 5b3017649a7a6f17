# Helper functions of the template_match rules (template_match.smk, which includes this file).


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
