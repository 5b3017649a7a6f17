# Helper functions of the evaluate and figures rules (evaluate.smk, report.smk): which outputs
# a run's models and figures have. The models a run has: train_variants(), 2D or 3D data:
# eval_is_2d() (common.smk, used by other stages too).


def eval_pose_dims(variant):
    """Pose dimensions of a variant's model (the baseline has none)."""
    return 0 if variant == "bvae" else int(config["model"]["pose_dims"])


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
