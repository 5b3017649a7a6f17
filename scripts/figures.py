"""Rule entry point of stage `figures`: see affinity_vae/figures.py."""
from affinity_vae.figures import main
from affinity_vae.runner import run

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
