"""Rule entry point of rule `predict_particles`: see affinity_vae/predict.py."""
from affinity_vae.predict import main
from affinity_vae.runner import run

run(snakemake, main)
