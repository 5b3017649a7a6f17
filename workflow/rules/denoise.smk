# Stage `denoise`: Topaz pretrained 3D denoising, one job per tomogram.


def denoise_input(wildcards):
    return f"{tomogram_dir(wildcards.tomo)}/reconstruction.mrc"


rule denoise_tomogram:
    input:
        denoise_input,
    output:
        f"{RUN}/denoised/{{tomo}}.mrc",
    params:
        denoise=config["denoise"],
        device=config["device"],
    log:
        f"{LOGS}/denoise/{{tomo}}.log",
    benchmark:
        f"{BENCH}/denoise/{{tomo}}.tsv"
    conda:
        env("denoise")
    script:
        "../../scripts/denoise.py"


rule denoise:
    input:
        expand(f"{RUN}/denoised/{{tomo}}.mrc", tomo=tomograms())
        if config["denoise"].get("enabled", True) and config["dataset"]["source"] != "subtomo_folder"
        else [],
