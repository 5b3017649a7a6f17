"""Rule entry point of rules `denoise_tomogram` and `predict_denoise`: see affinity_vae/denoise/."""
from affinity_vae.denoise import main
from affinity_vae.runner import run

run(snakemake, main)
