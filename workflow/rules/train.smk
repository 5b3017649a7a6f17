# Stage `train`: the Affinity-VAE (variant avae) and the beta-VAE baseline (variant bvae:
# gamma 0 and pose_dims 0, everything else the same; trained when evaluate.baseline is true).


rule train_model:
    input:
        stacks=expand(f"{RUN}/subtomos/{{tomo}}.mrcs", tomo=tomograms()),
        stars=expand(f"{RUN}/subtomos/{{tomo}}.star", tomo=tomograms()),
        affinity=f"{RUN}/affinity/affinity.csv",
    output:
        model=f"{RUN}/model/{{variant}}/model.pt",
        history=f"{RUN}/model/{{variant}}/history.csv",
        curves=report(
            f"{RUN}/model/{{variant}}/curves.png",
            caption="../report/curves.rst",
            category="Training",
            labels={"variant": "{variant}", "figure": "training curves"},
        ),
    log:
        f"{LOGS}/train/{{variant}}.log",
    benchmark:
        f"{BENCH}/train/{{variant}}.tsv"
    wildcard_constraints:
        variant="avae|bvae",
    conda:
        env("train")
    resources:
        # the particles are held in memory twice (stack + training tensor) plus torch
        mem_mb=lambda wc, input: int(2000 + 3 * input.size_mb),
    params:
        model={**config["model"], "gmd_physics": gmd_physics()},
        train=config["train"],
        tilt_range=data_tilt_range(),
        seed=config["seed"],
        device=config["device"],
    script:
        "../../scripts/train.py"


rule train:
    input:
        expand(f"{RUN}/model/{{variant}}/model.pt", variant=train_variants()),
