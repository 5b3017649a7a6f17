"""Rule entry point of stage `denoise`: see affinity_vae/denoise.py."""
from affinity_vae.runner import run
from affinity_vae.denoise import main

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
