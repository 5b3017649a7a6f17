"""Rule entry point of rules `extract_tomogram` and `extract_imported`: see affinity_vae/extract/."""
from affinity_vae.extract import main
from affinity_vae.runner import run

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
