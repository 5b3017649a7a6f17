"""Rule entry point of stage `affinity` (rule affinity_method): see affinity_vae/affinity/."""
from affinity_vae.affinity.stage import main
from affinity_vae.runner import run

run(snakemake, main)
