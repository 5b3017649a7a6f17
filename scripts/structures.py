"""Rule entry point of stage `structures`: see affinity_vae/structures/build.py."""
from affinity_vae.runner import run
from affinity_vae.structures import main

run(snakemake, main)
