"""Rule entry point of stage `predict`: see affinity_vae/predict.py."""
from affinity_vae.runner import run
from affinity_vae.predict import main

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
