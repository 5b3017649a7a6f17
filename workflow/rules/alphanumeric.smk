# The paper's 2D alphanumeric experiment (dataset.source alphanumeric; config/alphanumeric.yaml):
# rendered glyph images in the extract stage's stack + STAR contract, and the glyph shape
# affinity that affinity.method `file` reads (affinity_vae/alphanumeric.py; docs/alphanumeric.md).


# The images are rendered, not cut from a tomogram: this rule makes subtomos/alphanumeric.*
ruleorder: alphanumeric_dataset > extract_tomogram


rule alphanumeric_dataset:
    output:
        stack=f"{RUN}/subtomos/alphanumeric.mrcs",
        star=f"{RUN}/subtomos/alphanumeric.star",
    log:
        f"{LOGS}/alphanumeric/dataset.log",
    benchmark:
        f"{BENCH}/alphanumeric/dataset.tsv"
    conda:
        env("alphanumeric")
    params:
        dataset=config["dataset"],
        seed=config["seed"],
    script:
        "../../scripts/alphanumeric.py"


# Any run's glyph.csv (results/<run>/affinity/glyph.csv), so that affinity.path chains to this
# rule even when the run name is overridden on the command line.
rule alphanumeric_affinity:
    output:
        csv="results/{glyph_run}/affinity/glyph.csv",
        png=report(
            "results/{glyph_run}/affinity/glyph.png",
            caption="../report/glyph_affinity.rst",
            category="Affinity",
            labels={"matrix": "glyph (best NCC over rotations)"},
        ),
    log:
        "results/{glyph_run}/logs/alphanumeric/affinity.log",
    benchmark:
        "results/{glyph_run}/benchmarks/alphanumeric/affinity.tsv"
    wildcard_constraints:
        glyph_run="[A-Za-z0-9_.-]+",
    localrule: True
    conda:
        env("alphanumeric")
    params:
        alphanumeric=config["dataset"]["alphanumeric"],
    script:
        "../../scripts/alphanumeric_affinity.py"


rule alphanumeric:
    input:
        rules.alphanumeric_dataset.output,
        f"{RUN}/affinity/glyph.csv",
