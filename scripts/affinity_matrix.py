"""Rule entry point of stage `affinity` (rule affinity_matrix): see affinity_vae/affinity/."""
from affinity_vae.affinity.stage import main_matrix
from affinity_vae.runner import run

run(snakemake, main_matrix)
