# Stage `affinity`: SOAP and FSC class-affinity matrices, and the matrix training uses
# (affinity_vae/affinity/; config keys and measured numbers in docs/affinity.md).


rule affinity_method:
    input:
        structures=f"{RUN}/structures",
    output:
        csv=f"{RUN}/affinity/{{method}}.csv",
        png=report(
            f"{RUN}/affinity/{{method}}.png",
            caption="../report/affinity.rst",
            category="Affinity",
            labels={"matrix": "{method}"},
        ),
    log:
        f"{LOGS}/affinity/{{method}}.log",
    benchmark:
        f"{BENCH}/affinity/{{method}}.tsv"
    wildcard_constraints:
        method="soap|fsc",
    conda:
        env("affinity")
    params:
        # only this method's settings, so changing one method does not re-run the other
        affinity=lambda wildcards: {
            wildcards.method: config["affinity"][wildcards.method]
        },
        seed=config["seed"],
    script:
        "../../scripts/affinity.py"


rule affinity_matrix:
    input:
        unpack(affinity_source),
    output:
        csv=f"{RUN}/affinity/affinity.csv",
        png=report(
            f"{RUN}/affinity/affinity.png",
            caption="../report/affinity.rst",
            category="Affinity",
            labels={"matrix": "used for training"},
        ),
    log:
        f"{LOGS}/affinity/affinity.log",
    benchmark:
        f"{BENCH}/affinity/affinity.tsv"
    conda:
        env("affinity")
    params:
        # method, path, tolerance, overrides, scale (the methods' settings live in their CSVs)
        affinity={
            k: v for k, v in config["affinity"].items() if k not in ("soap", "fsc")
        },
    script:
        "../../scripts/affinity_matrix.py"


rule affinity:
    input:
        affinity_targets(),
