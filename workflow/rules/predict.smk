# Stage `predict`: a trained model applied to new tomograms -> latents, classes ("unknown,
# nearest X" for poor fits) and poses as STAR (affinity_vae/predict.py; docs/evaluate.md), also
# written back as a RELION 5 particles STAR (and copick picks for a copick dataset).


include: "predict_functions.smk"


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
