"""Entry point of rules `extract_tomogram` and `extract_imported`: see affinity_vae/extract/."""
from affinity_vae.extract import main
from affinity_vae.runner import run

run(snakemake, main)
