"""Rule entry point of stage `structures`: see affinity_vae/structures/build.py."""
from affinity_vae.runner import run
from affinity_vae.structures import main

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
