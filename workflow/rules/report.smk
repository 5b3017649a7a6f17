# Stage `report`: the paper's figures and Table 1 (the HTML report comes from `snakemake --report`).


rule figures:
    input:
        f"{RUN}/figures/table1.md",
