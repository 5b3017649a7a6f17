"""Rule entry point of rule `alphanumeric_dataset`: see affinity_vae/alphanumeric.py."""
from affinity_vae.alphanumeric import main_dataset
from affinity_vae.runner import run

run(snakemake, main_dataset)
