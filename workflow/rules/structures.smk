# Stage `structures`: class structures (generated, a folder, or RCSB) and their densities.
# Output: <class>.pdb (atomic model), <class>.mrc (density at dataset.voxel_size, centred)
# and manifest.csv. See docs/structures.md.
#
# structures.source rcsb: rule fetch_structure downloads each selected PDB ID to
# <structures.cache>/<ID>.cif (default resources/structures/rcsb, see resources/README.md), one
# job an ID, before the structures job, which only reads them. Snakemake knows the files: a
# deleted one is fetched again, a present one never is.
import shlex

from affinity_vae.preflight import structure_classes

# The folder RCSB downloads land in (structures.cache, `~` expanded), and the files the
# structures job reads: <cache>/<ID>.cif for every PDB ID left after structures.classes /
# structures.exclude (source rcsb; else none).
RCSB_CACHE = os.path.normpath(os.path.expanduser(config["structures"]["cache"]))
RCSB_DOWNLOADS = (
    [f"{RCSB_CACHE}/{name.upper()}.cif" for name in structure_classes(config)[0]]
    if config["structures"]["source"] == "rcsb"
    else []
)


# shell:, not script:. Snakemake re-runs a script: job whose output is older than the script
# file, so a fresh clone (new mtimes) would fetch a whole shared cache again. What the command
# needs beyond the ID is passed as resources, not params: a changed param re-runs the job, a
# changed resource does not, so a changed structures.rcsb_url fetches nothing again. Retries
# and timeouts: affinity_vae/structures/sources.py (download_rcsb). Local: the submit host has
# the network.
rule fetch_structure:
    output:
        f"{RCSB_CACHE}/{{id}}.cif",
    log:
        f"{LOGS}/fetch_structure/{{id}}.log",
    benchmark:
        f"{BENCH}/fetch_structure/{{id}}.tsv"
    wildcard_constraints:
        id="[0-9][A-Z0-9]{3}",
    localrule: True
    conda:
        env("structures")
    resources:
        # (threads, mem_mb, runtime: profiles/default/config.yaml, as for every rule)
        # the stage's conda env's Python (first on PATH) when envs are deployed, else the one
        # running Snakemake, as for script: rules
        python=(
            "python"
            if workflow.deployment_settings.deployment_method
            else shlex.quote(sys.executable)
        ),
        script=str(REPO / "scripts" / "fetch_structure.py"),
        url=config["structures"]["rcsb_url"],
    params:
        pdb_id=lambda wildcards: wildcards.id,
    shell:
        "{resources.python} {resources.script:q} {params.pdb_id} {output:q} "
        "{resources.url:q} {log:q}"


rule structures_build:
    input:
        downloads=RCSB_DOWNLOADS,
    output:
        directory(f"{RUN}/structures"),
    log:
        f"{LOGS}/structures.log",
    benchmark:
        f"{BENCH}/structures.tsv"
    # seconds of work: runs where the workflow runs (downloads are rule fetch_structure's)
    localrule: True
    conda:
        env("structures")
    params:
        structures=config["structures"],
        voxel_size=config["dataset"]["voxel_size"],
        seed=config["seed"],
    script:
        "../../scripts/structures.py"


rule structures:
    input:
        rules.structures_build.output,
