"""Rule entry point of stage `extract`: see affinity_vae/extract.py."""
from affinity_vae.extract import main
from affinity_vae.runner import run

run(snakemake, main)  # noqa: F821 (snakemake is injected by the script directive)
