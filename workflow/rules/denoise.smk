# Stage `denoise`: topaz pretrained 3D denoising, one job per tomogram (exact tiling, see
# affinity_vae/denoise/unet.py). When denoise.enabled is false, extract reads the reconstruction.


rule denoise_tomogram:
    input:
        denoise_input,
    output:
        f"{RUN}/denoised/{{tomo}}.mrc",
    log:
        f"{LOGS}/denoise/{{tomo}}.log",
    benchmark:
        f"{BENCH}/denoise/{{tomo}}.tsv"
    conda:
        env("denoise")
    resources:
        mem_mb=denoise_mem_mb,
    params:
        denoise=config["denoise"],
        device=config["device"],
    script:
        "../../scripts/denoise.py"


rule denoise:
    input:
        (
            expand(f"{RUN}/denoised/{{tomo}}.mrc", tomo=tomograms())
            if config["denoise"]["enabled"]
            and config["dataset"]["source"] != "subtomo_folder"
            else []
        ),
