"""Rule entry point of rules `evaluate_avae`/`evaluate_bvae`: see affinity_vae/evaluate/run.py."""
from affinity_vae.evaluate.run import main_variant
from affinity_vae.runner import run

run(snakemake, main_variant)
