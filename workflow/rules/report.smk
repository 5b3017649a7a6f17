# Stage `figures`: the paper's figures and Table 1, regenerated from the cached evaluation
# (no retraining). The HTML report comes from `snakemake --report results/<run>/report.html`.


def figure_outputs():
    """Named outputs of rule figures_build (Fig. 2 only for 2D data)."""
    d = f"{RUN}/figures"

    def fig(file, caption, title):
        return report(
            f"{d}/{file}",
            caption=f"../report/{caption}.rst",
            category="1. Paper figures",
            labels={"figure": title},
        )

    out = dict(
        table1_csv=fig("table1.csv", "table1", "Table 1"),
        table1_md=f"{d}/table1.md",
        fig3=fig("fig3.png", "fig3", "Fig. 3"),
        fig6=fig("fig6.png", "fig6", "Fig. 6"),
        fig7=fig("fig7.png", "fig7", "Fig. 7"),
    )
    if eval_is_2d():
        out["fig2"] = fig("fig2.png", "fig2", "Fig. 2")
    return out


rule figures_build:
    input:
        metrics=f"{RUN}/eval/metrics.json",
        variants=expand(
            f"{RUN}/eval/{{variant}}/{{file}}",
            variant=eval_variants(),
            file=[
                "similarity.csv",
                "confusion_norm.csv",
                "embedding.csv",
                "latents.parquet",
            ],
        ),
        volumes=expand(f"{RUN}/eval/{{variant}}/volumes", variant=eval_variants()),
        affinity=f"{RUN}/affinity/affinity.csv",
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
