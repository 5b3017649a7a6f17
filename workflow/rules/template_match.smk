# Rule `template_match`: the template-matching baseline (affinity_vae/evaluate/tm.py) on the
# test particles the models are scored on; eval/tm/ is a column of Table 1 (3D data, when
# evaluate.tm.enabled). physics: what the data did to a density (missing wedge, CTF, contrast).


include: "template_match_functions.smk"


rule template_match:
    input:
        stacks=expand(f"{RUN}/subtomos/{{tomo}}.mrcs", tomo=tomograms()),
        stars=expand(f"{RUN}/subtomos/{{tomo}}.star", tomo=tomograms()),
        affinity=f"{RUN}/affinity/affinity.csv",
        structures=f"{RUN}/structures",
    output:
        metrics=f"{RUN}/eval/tm/metrics.json",
        predictions=f"{RUN}/eval/tm/predictions.csv",
        confusion=f"{RUN}/eval/tm/confusion.csv",
        confusion_norm=f"{RUN}/eval/tm/confusion_norm.csv",
        confusion_png=report(
            f"{RUN}/eval/tm/confusion.png",
            caption="../report/tm.rst",
            category="2. Evaluation",
            subcategory="TM",
            labels={"model": "TM", "figure": "confusion matrix (normalised)"},
        ),
        poses=f"{RUN}/eval/tm/poses.star",
    log:
        f"{LOGS}/evaluate/tm.log",
    benchmark:
        f"{BENCH}/evaluate/tm.tsv"
    conda:
        env("evaluate")
    params:
        tm=config["evaluate"]["tm"],
        # only the group definitions of the evaluate section: a classifier change must not
        # re-run template matching
        evaluate={k: config["evaluate"][k] for k in ("structural_groups", "groups")},
        report=config["report"],
        seed=config["seed"],
        physics=tm_physics(),
    script:
        "../../scripts/template_match.py"
