"""Rule entry point of stage `evaluate`: see affinity_vae/evaluate/."""
from affinity_vae.runner import run
from affinity_vae.evaluate import main

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
