"""Affinity-VAE pipeline library: one module (or subpackage) per Snakemake stage.

Each stage's module imports only the packages of its own conda env (``envs/<stage>.yaml``).
"""

__version__ = "0.1.0"
