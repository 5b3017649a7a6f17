# Stage `evaluate`: encode every particle, classify, place unseen classes, compare the latent
# geometry with the affinity prior, embed, interpolate, score the pose channel
# (affinity_vae/evaluate/; config keys and outputs in docs/evaluate.md).


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
    return out


for _variant in ["avae", "bvae"]:

    rule:
        name:
            f"evaluate_{_variant}"
        input:
            model=f"{RUN}/model/{_variant}/model.pt",
            stacks=expand(f"{RUN}/subtomos/{{tomo}}.mrcs", tomo=tomograms()),
            stars=expand(f"{RUN}/subtomos/{{tomo}}.star", tomo=tomograms()),
            affinity=f"{RUN}/affinity/affinity.csv",
            manifest=[] if eval_is_2d() else f"{RUN}/structures",
        output:
            **eval_outputs(_variant),
        log:
            f"{LOGS}/evaluate/{_variant}.log",
        benchmark:
            f"{BENCH}/evaluate/{_variant}.tsv"
        conda:
            env("evaluate")
        threads: 2
        params:
            evaluate=config["evaluate"],
            report=config["report"],
            seed=config["seed"],
            device=config["device"],
        script:
            "../../scripts/evaluate.py"


rule evaluate_summary:
    input:
        metrics=expand(f"{RUN}/eval/{{variant}}/metrics.json", variant=eval_variants()),
    output:
        metrics=f"{RUN}/eval/metrics.json",
    log:
        f"{LOGS}/evaluate/summary.log",
    benchmark:
        f"{BENCH}/evaluate/summary.tsv"
    localrule: True
    conda:
        env("evaluate")
    params:
        evaluate=config["evaluate"],
    script:
        "../../scripts/evaluate.py"


rule evaluate:
    input:
        f"{RUN}/eval/metrics.json",
