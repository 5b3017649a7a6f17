# Stage `simulate`: SHREC 2021-layout tomograms made from the structures, one job each
# (affinity_vae/simulate/; conventions and measured times in docs/simulate.md).


rule simulate_tomogram:
    input:
        structures=f"{RUN}/structures",
    output:
        reconstruction=f"{RUN}/data/simulated/{{tomo}}/reconstruction.mrc",
        grandmodel=f"{RUN}/data/simulated/{{tomo}}/grandmodel.mrc",
        class_mask=f"{RUN}/data/simulated/{{tomo}}/class_mask.mrc",
        occupancy_mask=f"{RUN}/data/simulated/{{tomo}}/occupancy_mask.mrc",
        locations=f"{RUN}/data/simulated/{{tomo}}/particle_locations.txt",
        class_table=f"{RUN}/data/simulated/{{tomo}}/class_conversion_table.txt",
    log:
        f"{LOGS}/simulate/{{tomo}}.log",
    benchmark:
        f"{BENCH}/simulate/{{tomo}}.tsv"
    wildcard_constraints:
        tomo=r"model_\d+",
    conda:
        env("simulate")
    params:
        simulate=config["simulate"],
        voxel_size=config["dataset"]["voxel_size"],
        seed=config["seed"],
    script:
        "../../scripts/simulate.py"


rule simulate:
    input:
        (
            expand(
                f"{RUN}/data/simulated/{{tomo}}/reconstruction.mrc", tomo=tomograms()
            )
            if config["dataset"]["source"] == "simulate"
            else []
        ),
