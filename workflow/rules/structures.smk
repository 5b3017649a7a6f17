# Stage `structures`: class structures (generated, a folder, or RCSB) and their densities.


rule structures_build:
    output:
        directory(f"{RUN}/structures"),
    params:
        structures=config["structures"],
        voxel_size=config["dataset"]["voxel_size"],
        seed=config["seed"],
    log:
        f"{LOGS}/structures.log",
    benchmark:
        f"{BENCH}/structures.tsv"
    conda:
        env("structures")
    script:
        "../../scripts/structures.py"


rule structures:
    input:
        rules.structures_build.output,
