"""`make paper` (affinity_vae/paper.py): Table 1 puts the paper's published numbers beside this
project's runs, scored the paper's way (mean per-class F1 of a size group's classes); the
reduced end-to-end variant (slow) produces every figure and Table 1 from the SHREC maps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from affinity_vae import paper
from affinity_vae.evaluate.metrics import (
    SHREC_SIZE_GROUPS,
    build_groups,
    classification_metrics,
    group_f1,
    mean_f1_by_group,
    merged_group_f1,
)

REPO = Path(__file__).resolve().parents[1]
SHREC_STRUCTURES = REPO.parent / "shared" / "data" / "shrec2021-structures"
CLASSES = sorted(c for g in SHREC_SIZE_GROUPS.values() for c in g)


def metrics_from(y_true: list[str], y_pred: list[str], best_r: float | None = None) -> dict:
    """metrics.json as evaluate writes it (classification, groups, groups_merged)."""
    m = classification_metrics(y_true, y_pred, CLASSES)
    schemes = build_groups(CLASSES, None, {}, {})
    m["groups"] = group_f1(m["per_class"], schemes)
    m["groups_merged"] = merged_group_f1(y_true, y_pred, schemes)
    m["affinity_pearson_r"] = 0.5
    if best_r is not None:
        m["affinity_attainable"] = {"best_pearson_r": best_r}
    return m


def perfect() -> dict:
    y = [c for c in CLASSES for _ in range(4)]
    return metrics_from(y, y, best_r=0.9)


def within_group_confusion() -> dict:
    """Every 1s3x particle called 3qm1 (both small): a merged-label score would call the small
    group perfect; the paper's mean per-class F1 does not."""
    y = [c for c in CLASSES for _ in range(4)]
    pred = ["3qm1" if c == "1s3x" else c for c in y]
    return metrics_from(y, pred, best_r=0.8)


def test_published_numbers_sit_beside_the_project_columns():
    t = paper.table1({"recon_cnn": perfect() | {"baseline": within_group_confusion()},
                      "recon_gmd": within_group_confusion()})
    assert list(t.index) == paper.ROWS
    assert t.loc["small", "TM (published)"] == 0.233
    assert t.loc["large", "best SHREC 2021 (published)"] == 0.998
    assert t.loc["medium", "CNN-aVAE (paper)"] == 0.617
    assert t.loc["large", "GMD-aVAE (paper)"] == 0.945
    assert t.loc["accuracy", "aVAE (paper)"] == 0.67
    assert t.loc["accuracy", "beta-VAE (paper)"] == 0.50
    cnn, bvae = "CNN-aVAE (iii), this project", "beta-VAE (iii), this project"
    # a perfect classifier scores 1 on every row; its attainable r is reported as given
    assert all(t.loc[r, cnn] == 1.0 for r in ("small", "medium", "large", "accuracy",
                                               "macro-F1"))
    assert t.loc["best attainable r", cnn] == 0.9
    assert t.loc["small", bvae] < 1.0 and t.loc["medium", bvae] == 1.0
    # runs that are absent leave their columns empty, not invented
    assert t["CNN-aVAE (i), this project"].isna().all()
    assert t["GMD-aVAE (ii), this project"].isna().all()


def test_size_rows_are_the_papers_mean_per_class_f1():
    m = within_group_confusion()
    per_class_f1 = {c: v["f1"] for c, v in m["per_class"].items()}
    small = mean_f1_by_group(per_class_f1, SHREC_SIZE_GROUPS)["small"]
    # 1s3x: recall 0 (F1 0); 3qm1: precision 1/2 (F1 2/3); three small classes perfect
    assert small == pytest.approx((0 + 2 / 3 + 3) / 5)
    assert m["groups_merged"]["size/small"] == 1.0  # the lenient score would hide it
    t = paper.table1({"recon_gmd": m})
    assert t.loc["small", "GMD-aVAE (iii), this project"] == pytest.approx(small)
    assert t.loc["accuracy", "GMD-aVAE (iii), this project"] == pytest.approx(1 - 4 / 48)


def test_random_predictions_score_near_chance():
    rng = np.random.default_rng(0)
    y = [c for c in CLASSES for _ in range(200)]
    pred = list(rng.choice(CLASSES, len(y)))
    t = paper.table1({"recon_cnn": metrics_from(y, pred)})
    col = t["CNN-aVAE (iii), this project"]
    for r in ("small", "medium", "large", "accuracy", "macro-F1"):
        assert abs(col[r] - 1 / 12) < 0.03, (r, col[r])
    assert np.isnan(col["best attainable r"])  # not in metrics.json: left empty


def write_run(root: Path, name: str, metrics: dict) -> None:
    (root / "results" / name / "eval").mkdir(parents=True)
    (root / "results" / name / "eval" / "metrics.json").write_text(json.dumps(metrics))


def test_collate_writes_table1_and_an_index(tmp_path):
    write_run(tmp_path, "p_recon_cnn", perfect() | {"baseline": within_group_confusion()})
    t = paper.collate("p", tmp_path)
    out = tmp_path / "results" / "p"
    back = pd.read_csv(out / "table1.csv", index_col=0)
    assert np.allclose(back.to_numpy(float), t.to_numpy(float), equal_nan=True)
    md = (out / "table1.md").read_text()
    assert "| small | 0.233 | 0.563 | 0.594 | 0.531 | 0.517 | – | – | 1.000 |" in md
    index = (out / "README.md").read_text()
    for fig in paper.FIGURES:
        assert f"{fig}.png" in index  # listed, marked missing when its run did not run
    assert "fig2.png — missing" in index


def test_run_overlays_share_the_first_runs_data_and_prior(tmp_path):
    by_key = {r.key: r for r in paper.RUNS}
    assert paper.RUNS[0].first and paper.RUNS[0].key == "recon_cnn"
    o = paper.overlay(by_key["grandmodel_gmd"], "p", structures=str(tmp_path))
    assert o["run"] == "p_grandmodel_gmd"
    assert o["dataset"]["path"] == "results/p_recon_cnn/data/simulated"
    assert o["affinity"] == {"method": "file", "path": "results/p_recon_cnn/affinity/soap.csv"}
    assert o["structures"] == {"source": "dir", "path": str(tmp_path.resolve())}
    assert "dataset" not in paper.overlay(by_key["recon_cnn"], "p")
    real = paper.overlay(by_key["recon_gmd"], "p", data=str(tmp_path))
    assert real["dataset"] == {"source": "shrec", "path": str(tmp_path.resolve())}
    cmd = paper.snakemake_command(by_key["recon_gmd"], "p", 1, True, None, str(tmp_path),
                                  tmp_path / "cfg")
    files = cmd[cmd.index("--configfile") + 1:]
    assert files[-3:] == ["config/paper/real_data.yaml", paper.QUICK[True],
                          str(tmp_path / "cfg" / "recon_gmd.yaml")]


def merged_config(*files: str) -> dict:
    """The config Snakemake builds: config/config.yaml, then each file merged over it."""
    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict)
                        else v for k, v in b.items()}}
    cfg: dict = {}
    for f in ("config/config.yaml", *files):
        cfg = merge(cfg, yaml.safe_load((REPO / f).read_text()) or {})
    return cfg


@pytest.mark.parametrize("run", [r for r in paper.RUNS if r.shrec], ids=lambda r: r.key)
def test_paper_configs_state_what_the_paper_runs_are(run):
    cfg = merged_config(*run.configfiles)
    assert cfg["run"] == f"paper_{run.key}"  # not the demo's run inherited from config.yaml
    assert sorted(cfg["structures"]["ids"]) == CLASSES
    variant = {"(i)": "isolated", "(ii)": "grandmodel", "(iii)": "reconstruction"}
    assert cfg["extract"]["source"] == variant[run.variant.split()[0]]
    unseen = ["3d2f", "3h84"] if run.key == "isolated_cnn" else []
    assert cfg["dataset"]["unseen_classes"] == unseen  # not the demo's ring7
    decoder = "gmd" if run.key.endswith("gmd") else "cnn"
    assert cfg["model"]["decoder"] == decoder
    assert cfg["model"]["pose_dims"] == (4 if decoder == "gmd" else 1)
    assert cfg["evaluate"]["baseline"] is (run.key == "recon_cnn")
    if run.key == "isolated_cnn":
        assert cfg["train"]["augment"] == "any"


@pytest.mark.slow
def test_quick_paper_run_makes_every_figure_and_table1():
    """The reduced paper variant end to end (SHREC maps and PDBs from the shared folder)."""
    if not SHREC_STRUCTURES.is_dir():
        pytest.skip(f"{SHREC_STRUCTURES} (the SHREC 2021 maps and PDBs) is absent")
    os.environ.setdefault("MPLBACKEND", "Agg")
    status = paper.run_all("test_paper", cores=2, jobs=2, quick=True,
                           structures=str(SHREC_STRUCTURES), repo=REPO)
    out = REPO / "results" / "test_paper"
    assert status == dict.fromkeys(status, 0), {k: (out / "logs" / f"{k}.log").read_text()[-3000:]
                                                 for k, v in status.items() if v}
    import matplotlib.image as mpimg

    for fig in paper.FIGURES:
        img = mpimg.imread(out / f"{fig}.png")
        assert img.std() > 0.05, f"{fig} is blank"
    t = pd.read_csv(out / "table1.csv", index_col=0)
    for run in paper.RUNS:
        if not run.shrec:
            continue
        m = json.loads((REPO / "results" / f"test_paper_{run.key}" / "eval" / "metrics.json")
                       .read_text())
        for variant, model in run.models:
            d = m if variant == "avae" else m["baseline"]
            f1 = {c: v["f1"] for c, v in d["per_class"].items()}
            want = mean_f1_by_group(f1, SHREC_SIZE_GROUPS)
            col = f"{model} {run.variant.split()[0]}, this project"
            for g in ("small", "medium", "large"):
                assert t.loc[g, col] == pytest.approx(want[g]), (col, g)
            assert t.loc["accuracy", col] == pytest.approx(d["accuracy"])
    assert t.loc["small", "TM (published)"] == 0.233
    # template matching computed on the same test particles, for the reconstruction variant
    assert np.isfinite(t.loc["macro-F1", "TM (iii), this project"])


def test_runs_side_by_side_do_not_share_snakemake_locks(tmp_path):
    """Two runs started at once from one directory race on .snakemake/locks (numbered lock
    files): the side-by-side runs go without locks; their outputs are disjoint."""
    run = paper.RUNS[1]
    alone = paper.snakemake_command(run, "p", 1, True, None, None, tmp_path)
    side = paper.snakemake_command(run, "p", 1, True, None, None, tmp_path, nolock=True)
    assert "--nolock" not in alone and side == alone[:4] + ["--nolock"] + alone[4:]
    names = {paper.run_name("p", r.key) for r in paper.RUNS}
    assert len(names) == len(paper.RUNS)  # every run writes its own results/<name>/
