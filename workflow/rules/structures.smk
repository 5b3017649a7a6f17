# Stage `structures`: class structures (generated, a folder, or RCSB) and their densities.
# Output: <class>.pdb (atomic model), <class>.mrc (density at dataset.voxel_size, centred)
# and manifest.csv. See docs/structures.md.


rule structures_build:
    output:
        directory(f"{RUN}/structures"),
    log:
        f"{LOGS}/structures.log",
    benchmark:
        f"{BENCH}/structures.tsv"
    # seconds of work; runs where the workflow runs, so RCSB downloads need no compute-node network
    localrule: True
    conda:
        env("structures")
    threads: 1
    params:
        structures=config["structures"],
        voxel_size=config["dataset"]["voxel_size"],
        seed=config["seed"],
    script:
        "../../scripts/structures.py"


rule structures:
    input:
        rules.structures_build.output,
