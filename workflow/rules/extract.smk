# Stage `extract`: subtomogram boxes at the particle coordinates -> MRC stack + STAR, per tomogram.


def extract_tomogram(wildcards):
    """The denoised tomogram, or the raw reconstruction when denoising is disabled."""
    if config["denoise"].get("enabled", True):
        return f"{RUN}/denoised/{wildcards.tomo}.mrc"
    return f"{tomogram_dir(wildcards.tomo)}/reconstruction.mrc"


rule extract_tomogram:
    input:
        tomogram=extract_tomogram,
        locations=lambda wc: f"{tomogram_dir(wc.tomo)}/particle_locations.txt",
    output:
        stack=f"{RUN}/subtomos/{{tomo}}.mrcs",
        star=f"{RUN}/subtomos/{{tomo}}.star",
    params:
        extract=config["extract"],
        dataset=config["dataset"],
    log:
        f"{LOGS}/extract/{{tomo}}.log",
    benchmark:
        f"{BENCH}/extract/{{tomo}}.tsv"
    conda:
        env("extract")
    script:
        "../../scripts/extract.py"


rule extract:
    input:
        expand(f"{RUN}/subtomos/{{tomo}}.{{ext}}", tomo=tomograms(), ext=["mrcs", "star"]),
