# Affinity-VAE pipeline: tomograms -> denoise -> extract -> (affinity) -> train -> evaluate -> report.
# Run `snakemake --cores all` (or `make demo`); see README.md for targets and configuration.
import os

from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default only: a --configfile of your own starts from the schema
# defaults (workflow/schemas/), not from the demo's run name, classes or unseen_classes.
# --config key=value overrides go on top of whichever config file is in use.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"

elif "run" not in config:  # my.yaml -> results/my/, never the demo's results
    config["run"] = os.path.splitext(
        os.path.basename(workflow.overwrite_configfiles[-1])
    )[0]


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/structures.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/affinity.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/template_match.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/alphanumeric.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# One error, said once: jobs write their one-line error to their log only, and this prints
# each failed job's line (with its log file) at the end of the run (affinity_vae/failures.py).
if not getattr(workflow.execution_settings, "no_hooks", False):
    os.environ.update(AVAE_ERROR_SUMMARY="1")


onerror:
    from affinity_vae.failures import report_failures

    report_failures(log, workflow)
