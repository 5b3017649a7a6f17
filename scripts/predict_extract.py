"""Rule entry point of rule `predict_extract`: see affinity_vae/predict.py."""
from affinity_vae.predict import main_extract
from affinity_vae.runner import run

run(snakemake, main_extract)
