"""Rule entry point of stage `figures`: see affinity_vae/figures.py."""
from affinity_vae.figures import main
from affinity_vae.runner import run

run(snakemake, main)
