"""Class names are case-insensitive end to end: SHREC-style upper-case structure files, a user's
affinity CSV and an upper-case particle list all meet the same class."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, TINY, snakemake

from affinity_vae.classnames import align_names, class_key
from affinity_vae.data import read_affinity_matrix
from affinity_vae.errors import InputError
from affinity_vae.io.star import read_star
from affinity_vae.structures.checks import dir_class_names
from affinity_vae.structures.sources import find_dir_files, select
from affinity_vae.symmetry import class_point_groups


def _shrec_style_folder(shrec_structures, tmp_path, ids=("1s3x", "3qm1", "4cr2")):
    """A structure folder as SHREC users have it: upper-case stems (1S3X.pdb, 4CR2.mrc)."""
    folder = tmp_path / "structures_upper"
    folder.mkdir()
    for i in ids:
        pdb = shrec_structures / "pdb" / f"{i}.pdb"
        if pdb.is_file():
            shutil.copy(pdb, folder / f"{i.upper()}.pdb")
        shutil.copy(shrec_structures / "maps_10A" / f"{i}.mrc", folder / f"{i.upper()}.mrc")
    return folder


def test_class_key_is_the_lower_case_name():
    assert class_key(" 1BXN ") == class_key("1bxn") == class_key("1Bxn") == "1bxn"


def test_upper_case_structure_files_become_lower_case_classes(shrec_structures, tmp_path):
    folder = _shrec_style_folder(shrec_structures, tmp_path)
    files = find_dir_files(folder)
    assert sorted(files) == ["1s3x", "3qm1", "4cr2"] == dir_class_names(folder)
    assert set(files["3qm1"]) == {"model", "map"}  # 3QM1.pdb and 3QM1.mrc: one class
    assert set(files["4cr2"]) == {"map"}
    # structures.classes / exclude in any case select the same classes
    assert select(sorted(files), ["3QM1", "1s3x"], [], "f") == ["1s3x", "3qm1"]
    assert select(sorted(files), [], ["4CR2"], "f") == ["1s3x", "3qm1"]


def test_files_differing_only_in_case_are_one_class_and_refused_twice(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("1BXN.mrc", "1bxn.mrc"):
        (tmp_path / "a" / name).write_bytes(b"x")
    with pytest.raises(InputError, match="two map files"):
        find_dir_files(tmp_path / "a")


def test_a_users_affinity_csv_matches_the_data_whatever_the_case(tmp_path):
    csv = tmp_path / "mine.csv"
    pd.DataFrame([[1.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.0]],
                 index=["1BXN", "3QM1", "4CR2"], columns=["1BXN", "3QM1", "4CR2"]).to_csv(csv)
    df = read_affinity_matrix(csv, ["1bxn", "4cr2"])
    # the matched rows take the data's spelling; the values are the user's
    assert {"1bxn", "4cr2"} <= set(df.index) and list(df.index) == list(df.columns)
    assert df.loc["1bxn", "4cr2"] == pytest.approx(0.1)
    assert df.loc["3QM1", "1bxn"] == pytest.approx(0.3)
    with pytest.raises(InputError, match=r"lacks training class\(es\) \['5mrc'\]"):
        read_affinity_matrix(csv, ["1bxn", "5mrc"])


def test_names_differing_only_in_case_are_ambiguous():
    with pytest.raises(InputError, match="^my.csv: class names 'A' and 'a' differ only in case"):
        align_names(["a"], ["A", "a"], "my.csv")
    assert align_names(["Ab", "c"], ["aB", "D"]) == ({"Ab": "aB"}, ["c"])


def test_point_groups_found_whatever_the_case():
    manifest = pd.DataFrame({"class": ["1BXN", "3qm1"], "symmetry": ["D4", "C2"]})
    assert class_point_groups(manifest, ["1bxn", "3QM1"]) == {"1bxn": "D4", "3QM1": "C2"}


@pytest.mark.slow
def test_shrec_style_names_run_through_training(shrec_structures, tmp_path):
    """The reported failure: upper-case structure files ran simulate, denoise and extract, then
    train refused the affinity matrix (1S3X vs 1s3x). Now every stage sees one class."""
    folder = _shrec_style_folder(shrec_structures, tmp_path)
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(run="tiny_upper", structures={"source": "dir", "path": str(folder)})
    cfg["dataset"]["unseen_classes"] = []
    cfg["simulate"].update(n_particles=30)
    cfg["train"].update(epochs=2)
    cfg["evaluate"] = dict(cfg["evaluate"], baseline=False)
    cfg["denoise"] = {"enabled": False}
    configfile = tmp_path / "upper.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    run = REPO / "results" / "tiny_upper"
    shutil.rmtree(run, ignore_errors=True)
    try:
        snakemake("train", "--cores", "2", "--configfile", str(configfile), timeout=1200)
        aff = pd.read_csv(run / "affinity" / "affinity.csv", index_col=0)
        assert list(aff.index) == ["1s3x", "3qm1", "4cr2"]
        classes = set()
        for p in sorted((run / "subtomos").glob("*.star")):
            classes |= set(read_star(p)["avaeClass"].astype(str))
        assert classes == {"1s3x", "3qm1", "4cr2"}
        history = pd.read_csv(run / "model" / "avae" / "history.csv")
        assert len(history) == 2 and np.isfinite(history.select_dtypes(float).to_numpy()).all()
    finally:
        shutil.rmtree(run, ignore_errors=True)
