"""Entry point of rule `extract_imported` (a subtomo_folder dataset): see affinity_vae/extract/."""
from affinity_vae.extract import main_imported
from affinity_vae.runner import run

run(snakemake, main_imported)
