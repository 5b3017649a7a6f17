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


def rcsb_cache():
    """The folder RCSB downloads land in: structures.cache, `~` expanded, no trailing /."""
    return os.path.expanduser(config["structures"]["cache"]).rstrip("/") or "/"


def structure_downloads(wildcards=None):
    """The downloaded files the structures job reads: <cache>/<ID>.cif for every PDB ID
    left after structures.classes / structures.exclude (source rcsb; else none)."""
    if config["structures"]["source"] != "rcsb":
        return []
    names, _ = structure_classes(config)
    return [f"{rcsb_cache()}/{name.upper()}.cif" for name in names]


# The Python of the fetch job: the stage's conda env's (first on PATH) when envs are deployed,
# else the one running Snakemake, as for script: rules.
FETCH_PYTHON = (
    "python"
    if workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)


# shell:, not script:. Snakemake re-runs a script: job whose output is older than the script
# file, so a fresh clone (new mtimes) would fetch a whole shared cache again. Retries and
# timeouts: affinity_vae/structures/sources.py (download_rcsb). The URL is not a param: a
# changed structures.rcsb_url fetches nothing again. Local: the submit host has the network.
rule fetch_structure:
    output:
        f"{rcsb_cache()}/{{id}}.cif",
    log:
        f"{LOGS}/fetch_structure/{{id}}.log",
    benchmark:
        f"{BENCH}/fetch_structure/{{id}}.tsv"
    wildcard_constraints:
        id="[0-9][A-Z0-9]{3}",
    localrule: True
    conda:
        env("structures")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        pdb_id=lambda wildcards: wildcards.id,
    shell:
        "{FETCH_PYTHON} {REPO}/scripts/fetch_structure.py {params.pdb_id} {output:q} "
        "{config[structures][rcsb_url]:q} {log:q}"


rule structures_build:
    input:
        downloads=structure_downloads,
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
    threads: 1
    params:
        structures=config["structures"],
        voxel_size=config["dataset"]["voxel_size"],
        seed=config["seed"],
    script:
        "../../scripts/structures.py"


rule structures:
    input:
        rules.structures_build.output,
