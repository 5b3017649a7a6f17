"""Entry point of rule `extract_tomogram`: see affinity_vae/extract/."""
from affinity_vae.extract import main
from affinity_vae.runner import run

run(snakemake, main)
