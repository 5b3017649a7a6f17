# Affinity-VAE pipeline: tomograms -> denoise -> extract -> (affinity) -> train -> evaluate -> report.
# Run `snakemake --cores all` (or `make demo`); see README.md for targets and configuration.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/structures.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/affinity.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/alphanumeric.smk"


rule all:
    default_target: True
    input:
        all_targets(),
