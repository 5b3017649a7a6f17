"""Rule entry point of stage `affinity`: see affinity_vae/affinity.py."""
from affinity_vae.runner import run
from affinity_vae.affinity import main

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
