# Stage `affinity`: SOAP and FSC class-affinity matrices, and the matrix training uses.


rule affinity_method:
    input:
        structures=f"{RUN}/structures",
    output:
        csv=f"{RUN}/affinity/{{method}}.csv",
        png=f"{RUN}/affinity/{{method}}.png",
    wildcard_constraints:
        method="soap|fsc",
    params:
        affinity=config["affinity"],
    log:
        f"{LOGS}/affinity/{{method}}.log",
    benchmark:
        f"{BENCH}/affinity/{{method}}.tsv"
    conda:
        env("affinity")
    script:
        "../../scripts/affinity.py"


rule affinity:
    input:
        expand(f"{RUN}/affinity/{{method}}.csv", method=["soap", "fsc"]),
