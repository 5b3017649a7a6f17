"""Rule entry point of stage `simulate`: see affinity_vae/simulate/__init__.py."""
from affinity_vae.runner import run
from affinity_vae.simulate import main

run(snakemake, main)
