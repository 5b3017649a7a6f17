"""Rule entry point of rule `evaluate_summary`: see affinity_vae/evaluate/run.py."""
from affinity_vae.evaluate.run import main_summary
from affinity_vae.runner import run

run(snakemake, main_summary)
