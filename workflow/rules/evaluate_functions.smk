# Helper functions of the evaluate, figures and predict rules (evaluate.smk, report.smk,
# predict.smk): which models and figures a run has, and where predict reads its boxes.


def eval_is_2d():
    """True for 2D data (the alphanumeric glyph experiment)."""
    return str(config["dataset"].get("source", "")).lower() in (
        "glyphs",
        "alphanumeric",
    )


def eval_variants():
    """avae, plus the beta-VAE baseline when evaluate.baseline is true."""
    return ["avae", "bvae"] if config["evaluate"]["baseline"] else ["avae"]


def eval_pose_dims(variant):
    """Pose dimensions of a variant's model (the baseline has none)."""
    return 0 if variant == "bvae" else int(config["model"].get("pose_dims", 3))


def eval_pose_is_rotation(variant):
    """True when a variant's model turns its pose into a rotation (3D data, a pose channel, and
    the rotation pose head or the GMD decoder): then evaluate averages the particles with it.
    """
    m = config["model"]
    return (
        not eval_is_2d()
        and eval_pose_dims(variant) > 0
        and (m["pose_head"] == "rotation" or m["decoder"] == "gmd")
    )


def eval_outputs(variant):
    """Named outputs of rule evaluate_<variant>; figures are registered for the HTML report."""
    d = f"{RUN}/eval/{variant}"
    name = "aVAE" if variant == "avae" else "beta-VAE"

    def fig(file, caption, title):
        return report(
            f"{d}/{file}",
            caption=f"../report/{caption}.rst",
            category="2. Evaluation",
            subcategory=name,
            labels={"model": name, "figure": title},
        )

    out = dict(
        latents=f"{d}/latents.parquet",
        metrics=f"{d}/metrics.json",
        predictions=f"{d}/predictions.csv",
        confusion=f"{d}/confusion.csv",
        confusion_norm=f"{d}/confusion_norm.csv",
        similarity=f"{d}/similarity.csv",
        unseen=f"{d}/unseen.csv",
        embedding=f"{d}/embedding.csv",
        volumes=directory(f"{d}/volumes"),
        confusion_png=fig("confusion.png", "confusion", "confusion matrix (counts)"),
        confusion_norm_png=fig(
            "confusion_norm.png", "confusion", "confusion matrix (normalised)"
        ),
        similarity_png=fig(
            "prior_vs_learned.png", "prior_vs_learned", "prior vs learned"
        ),
        unseen_png=fig("unseen.png", "unseen", "unseen-class placement"),
        umap_png=fig("umap.png", "embedding", "UMAP"),
        tsne_png=fig("tsne.png", "embedding", "t-SNE"),
        interp_png=fig("interpolation.png", "interpolation", "latent interpolation"),
    )
    if eval_pose_dims(variant) > 0:
        out["pose_png"] = fig("pose.png", "pose", "pose vs truth")
        out["pose_sweep_png"] = fig("pose_sweep.png", "pose_sweep", "pose sweep")
        out["poses"] = f"{d}/poses.star"
    if eval_pose_is_rotation(variant) and config["evaluate"]["averages"]["enabled"]:
        out["averages_png"] = fig(
            "averages.png", "averages", "subtomogram averages from poses"
        )
    return out


def figure_outputs():
    """Named outputs of rule figures_build (Fig. 2 only for 2D data, Figs. 4-5 for 3D data)."""
    d = f"{RUN}/figures"

    def fig(file, caption, title):
        return report(
            f"{d}/{file}",
            caption=f"../report/{caption}.rst",
            category="1. Paper figures",
            labels={"figure": title},
        )

    out = dict(
        table1_csv=fig("table1.csv", "table1", "Table 1"),
        table1_md=f"{d}/table1.md",
        fig3=fig("fig3.png", "fig3", "Fig. 3"),
        fig6=fig("fig6.png", "fig6", "Fig. 6"),
        fig7=fig("fig7.png", "fig7", "Fig. 7"),
    )
    if eval_is_2d():
        out["fig2"] = fig("fig2.png", "fig2", "Fig. 2")
    else:  # decoded volumes (the paper shows a GMD-aVAE's; captions of the eval figures)
        if eval_pose_dims("avae") > 0:
            out["fig4"] = fig("fig4.png", "fig4", "Fig. 4")
        out["fig5"] = fig("fig5.png", "fig5", "Fig. 5")
    return out


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
    test = [t for t in config["dataset"]["splits"].get("test", []) if t in tomograms()]
    return list(predict_inputs()) or test or tomograms()


def predict_boxes(wildcards):
    """Boxes of a new tomogram (cut by predict_extract), or the run's own extracted stack."""
    if wildcards.name in predict_inputs():
        d = f"{RUN}/predict/{wildcards.name}"
    else:
        d = f"{RUN}/subtomos/{wildcards.name}"
    return {"stack": f"{d}.mrcs", "star": f"{d}.star"}
