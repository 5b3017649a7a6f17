# Real projects in: one tomogram of a RELION 5 project (dataset.source relion) or a copick
# project (copick) -> results/<run>/data/<source>/<tomo>/ in the SHREC 2021 layout
# (reconstruction.mrc + particle_locations.txt); every later stage reads that layout
# (affinity_vae/io/relion.py, affinity_vae/io/copick_project.py; docs/datasets.md).


rule import_tomogram:
    input:
        import_inputs,
    output:
        reconstruction=f"{RUN}/data/{config['dataset']['source']}/{{tomo}}/reconstruction.mrc",
        locations=f"{RUN}/data/{config['dataset']['source']}/{{tomo}}/particle_locations.txt",
    log:
        f"{LOGS}/import/{{tomo}}.log",
    benchmark:
        f"{BENCH}/import/{{tomo}}.tsv"
    wildcard_constraints:
        tomo="|".join(map(re.escape, tomograms())) if imported_source() else "(?!)",
    conda:
        env("datasets")
    params:
        dataset=config["dataset"],
    script:
        "../../scripts/import_tomogram.py"
