# Stage `extract`: subtomogram boxes at the particle coordinates -> MRC stack + STAR, per tomogram
# (or one `imported` stack for dataset.source subtomo_folder). extract.source isolated renders
# each particle alone from the structures' densities instead of cutting a tomogram.


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
        "../../scripts/extract_imported.py"


rule extract_tomogram:
    input:
        unpack(extract_inputs),
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
