"""Print where a run's results are: ``python -m affinity_vae.where config/config.yaml``.

Prints the metrics file, the figures folder and the command that builds the HTML report (and
the headline numbers when the metrics exist). ``make demo`` ends with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_name(configfile: str | Path) -> str:
    """The ``run`` of a config file (the schema default ``demo`` when it is not set)."""
    cfg = yaml.safe_load(Path(configfile).read_text()) or {}
    if "run" in cfg:
        return str(cfg["run"])
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return str(schema["properties"]["run"]["default"])


def describe(configfile: str | Path) -> str:
    """The lines printed for a config file."""
    run = run_name(configfile)
    base = Path("results") / run
    metrics = base / "eval" / "metrics.json"
    lines = [f"Run '{run}':",
             f"  metrics: {metrics}",
             f"  figures: {base / 'figures'}/ (Table 1: {base / 'figures' / 'table1.md'})",
             f"  report:  snakemake --configfile {configfile} --report {base / 'report.html'}"]
    if metrics.is_file():
        m = json.loads(metrics.read_text())

        def num(v):
            return f"{v:.3f}" if isinstance(v, (int, float)) and v == v else "n/a"
        line = (f"  aVAE test macro-F1 {num(m.get('macro_f1'))}, Pearson r (affinity vs latent) "
                f"{num(m.get('affinity_pearson_r'))}")
        if "baseline" in m:
            b = m["baseline"]
            line += (f"; beta-VAE macro-F1 {num(b.get('macro_f1'))}, Pearson r "
                     f"{num(b.get('affinity_pearson_r'))}")
        lines.append(line)
    else:
        lines.append(f"  ({metrics} does not exist yet: run `snakemake --configfile {configfile}`)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configfile = argv[0] if argv else "config/config.yaml"
    if not Path(configfile).is_file():
        print(f"ERROR: {configfile}: config file not found -- pass the --configfile you ran",
              file=sys.stderr)
        return 1
    print(describe(configfile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
