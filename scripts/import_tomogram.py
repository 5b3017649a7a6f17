"""Rule entry point of `import_tomogram`: one tomogram of a RELION 5 or copick project -> the
SHREC 2021 layout (affinity_vae/io/relion.py, affinity_vae/io/copick_project.py)."""
from pathlib import Path

from affinity_vae.runner import run


def main(smk):
    ds = smk.params.dataset
    if ds["source"] == "relion":
        from affinity_vae.io.relion import import_tomogram
    else:
        from affinity_vae.io.copick_project import import_tomogram
    import_tomogram(ds, smk.wildcards.tomo, Path(smk.output.locations).parent)


run(snakemake, main)
