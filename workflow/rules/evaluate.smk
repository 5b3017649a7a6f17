# Stage `evaluate`: encode every particle, classify, place unseen classes, compare the latent
# geometry with the affinity prior, embed, interpolate, score the pose channel and (3D, pose a
# rotation) average the particles with it (affinity_vae/evaluate/; keys and outputs in
# docs/evaluate.md). tilt_range: the boxes' missing wedge, compensated in the averages.


include: "evaluate_functions.smk"


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
        params:
            evaluate=config["evaluate"],
            report=config["report"],
            seed=config["seed"],
            device=config["device"],
            tilt_range=data_tilt_range(),
        script:
            "../../scripts/evaluate.py"


rule evaluate_summary:
    input:
        metrics=expand(f"{RUN}/eval/{{variant}}/metrics.json", variant=train_variants()),
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
        "../../scripts/evaluate_summary.py"


rule evaluate:
    input:
        f"{RUN}/eval/metrics.json",
        # template matching's baseline (template_match.smk, included after this file)
        lambda w: tm_metrics(),
