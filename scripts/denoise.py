"""Rule entry point of stage `denoise`: see affinity_vae/denoise.py."""
from affinity_vae.denoise import main
from affinity_vae.runner import run

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
