# Stage `train`: the Affinity-VAE (variant avae) and the beta-VAE baseline (variant bvae).


rule train_model:
    input:
        stacks=expand(f"{RUN}/subtomos/{{tomo}}.mrcs", tomo=tomograms()),
        stars=expand(f"{RUN}/subtomos/{{tomo}}.star", tomo=tomograms()),
        affinity=f"{RUN}/affinity/affinity.csv",
    output:
        model=f"{RUN}/model/{{variant}}/model.pt",
        history=f"{RUN}/model/{{variant}}/history.csv",
        curves=f"{RUN}/model/{{variant}}/curves.png",
    wildcard_constraints:
        variant="avae|bvae",
    params:
        model=config["model"],
        train=config["train"],
        seed=config["seed"],
        device=config["device"],
    log:
        f"{LOGS}/train/{{variant}}.log",
    benchmark:
        f"{BENCH}/train/{{variant}}.tsv"
    conda:
        env("train")
    script:
        "../../scripts/train.py"


rule train:
    input:
        expand(f"{RUN}/model/{{variant}}/model.pt", variant=["avae"]),
