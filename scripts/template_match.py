"""Rule entry point of rule `template_match`: see affinity_vae/evaluate/tm_run.py."""
from affinity_vae.evaluate.tm_run import main
from affinity_vae.runner import run

run(snakemake, main)
