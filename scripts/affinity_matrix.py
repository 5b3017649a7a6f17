"""Rule entry point of stage `affinity` (rule affinity_matrix): see affinity_vae/affinity/."""
from affinity_vae.runner import run
from affinity_vae.affinity.stage import main_matrix

run(snakemake, main_matrix)  # noqa: F821 (snakemake is injected by the script directive)
