# Stage `figures`: the paper's figures and Table 1, regenerated from the cached evaluation
# (no retraining). The HTML report comes from `snakemake --report results/<run>/report.html`.


rule figures_build:
    input:
        metrics=f"{RUN}/eval/metrics.json",
        variants=expand(
            f"{RUN}/eval/{{variant}}/{{file}}",
            variant=train_variants(),
            file=[
                "similarity.csv",
                "confusion_norm.csv",
                "embedding.csv",
                "latents.parquet",
            ],
        ),
        volumes=expand(f"{RUN}/eval/{{variant}}/volumes", variant=train_variants()),
        affinity=f"{RUN}/affinity/affinity.csv",
        tm=tm_metrics(),  # the template-matching column of Table 1 (template_match.smk)
    output:
        **figure_outputs(),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    localrule: True
    conda:
        env("report")
    params:
        report=config["report"],
    script:
        "../../scripts/figures.py"


rule figures:
    input:
        f"{RUN}/figures/table1.md",
