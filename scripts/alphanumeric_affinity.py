"""Rule entry point of rule `alphanumeric_affinity`: see affinity_vae/alphanumeric.py."""
from affinity_vae.alphanumeric import main_affinity
from affinity_vae.runner import run

run(snakemake, main_affinity)
