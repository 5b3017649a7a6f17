"""Rule entry point of stage `train`: see affinity_vae/train.py."""
from affinity_vae.runner import run
from affinity_vae.train import main

run(snakemake, main)
