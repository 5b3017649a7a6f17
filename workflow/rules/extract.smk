# Stage `extract`: subtomogram boxes at the particle coordinates -> MRC stack + STAR, per tomogram
# (or one `imported` stack for dataset.source subtomo_folder).


def extract_tomogram(wildcards):
    """The denoised tomogram, or the raw reconstruction when denoising is disabled."""
    if config["denoise"].get("enabled", True):
        return f"{RUN}/denoised/{wildcards.tomo}.mrc"
    return f"{tomogram_dir(wildcards.tomo)}/reconstruction.mrc"


def subtomo_folder_files(wildcards):
    """Every particle file (and classes.csv) of the imported folder, so changes re-run it."""
    if config["dataset"]["source"] != "subtomo_folder":
        return []
    root = Path(config["dataset"]["path"])
    return sorted(
        str(p)
        for sub in (root, root / "test")
        if sub.is_dir()
        for p in sub.iterdir()
        if p.suffix.lower() in (".mrc", ".mrcs") or p.name == "classes.csv"
    )


def all_locations(wildcards):
    """Every particle_locations.txt of the dataset: the class list spans the whole dataset."""
    return [f"{tomogram_dir(t)}/particle_locations.txt" for t in tomograms()]


# dataset.source subtomo_folder: one `imported` stack from the folder of particle files
ruleorder: extract_imported > extract_tomogram


rule extract_imported:
    input:
        subtomo_folder_files,
    output:
        stack=f"{RUN}/subtomos/imported.mrcs",
        star=f"{RUN}/subtomos/imported.star",
    log:
        f"{LOGS}/extract/imported.log",
    benchmark:
        f"{BENCH}/extract/imported.tsv"
    conda:
        env("extract")
    params:
        extract=config["extract"],
        dataset=config["dataset"],
        seed=config["seed"],
    script:
        "../../scripts/extract.py"


rule extract_tomogram:
    input:
        tomogram=extract_tomogram,
        locations=lambda wc: f"{tomogram_dir(wc.tomo)}/particle_locations.txt",
        all_locations=all_locations,
    output:
        stack=f"{RUN}/subtomos/{{tomo}}.mrcs",
        star=f"{RUN}/subtomos/{{tomo}}.star",
    log:
        f"{LOGS}/extract/{{tomo}}.log",
    benchmark:
        f"{BENCH}/extract/{{tomo}}.tsv"
    conda:
        env("extract")
    params:
        extract=config["extract"],
        dataset=config["dataset"],
        seed=config["seed"],
        tomograms=tomograms(),
    script:
        "../../scripts/extract.py"


rule extract:
    input:
        expand(
            f"{RUN}/subtomos/{{tomo}}.{{ext}}", tomo=tomograms(), ext=["mrcs", "star"]
        ),
