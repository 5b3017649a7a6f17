"""Bad input gives one InputError line naming the user's file or key and the fix, found by
`snakemake -n` where the data exist at planning time (affinity_vae/preflight.py), and the
table in README.md names a real test for every row."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import mrcfile
import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, snakemake

from affinity_vae.affinity.matrix import read_affinity
from affinity_vae.affinity.stage import main_matrix
from affinity_vae.config import check_config
from affinity_vae.data import read_affinity_matrix
from affinity_vae.errors import InputError
from affinity_vae.extract import Settings, import_folder
from affinity_vae.io.mrc import write_volume
from affinity_vae.io.star import read_star
from affinity_vae.preflight import preflight

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TABLE = REPO / "README.md"  # the bad-input table between its markers
LINES = "1BXN 10 20 5 0 0 0\n3QM1 30 40 20 10 20 30\nvesicle 5 5 5 nan nan nan\n"


# ---------------------------------------------------------------- tiny real-data inputs
def shrec(root: Path, lines: dict[str, str] | None = None, voxel: float = 10.0) -> Path:
    """A SHREC-layout folder: model_0, model_1 with a 32 x 64 x 64 reconstruction.mrc and a
    particle_locations.txt (``lines`` per tomogram, default LINES)."""
    for tomo in ("model_0", "model_1"):
        f = root / tomo
        f.mkdir(parents=True)
        with mrcfile.new(f / "reconstruction.mrc") as mrc:
            mrc.set_data(np.zeros((32, 64, 64), np.float32))
            mrc.voxel_size = voxel
        (f / "particle_locations.txt").write_text((lines or {}).get(tomo, LINES))
    return root


def structures(root: Path, names=("1bxn", "3qm1")) -> Path:
    """A structures folder; planning reads only the file names."""
    root.mkdir(parents=True)
    for n in names:
        (root / f"{n.upper()}.pdb").write_text("END\n")
    return root


def affinity_csv(path: Path, names: list[str], values: np.ndarray) -> Path:
    pd.DataFrame(values, index=names, columns=names).to_csv(path)
    return path


def config(tmp_path: Path, **sections) -> dict:
    """A real-data config (dataset shrec under tmp_path/shrec, structures dir) with
    ``sections`` merged in one level deep."""
    cfg = {"run": f"badinput_{tmp_path.name[-20:]}",
           "dataset": {"source": "shrec", "path": str(tmp_path / "shrec"),
                       "tomograms": ["model_0", "model_1"], "splits": {"test": ["model_1"]}},
           "structures": {"source": "dir", "path": str(tmp_path / "structures")}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def planned(cfg: dict) -> dict:
    """The config as the Snakefile sees it after check_config, then the planning checks."""
    cfg = copy.deepcopy(cfg)
    check_config(cfg, SCHEMA)
    preflight(cfg)
    return cfg


def refused(cfg: dict) -> str:
    """The one-line message preflight refuses ``cfg`` with."""
    with pytest.raises(InputError) as err:
        planned(cfg)
    msg = str(err.value)
    assert "\n" not in msg and " -- " in msg, msg  # one line: problem -- fix
    return msg


@pytest.fixture
def data(tmp_path):
    shrec(tmp_path / "shrec")
    structures(tmp_path / "structures")
    return tmp_path


# ---------------------------------------------------------------- through snakemake -n
def dry_run(cfg: dict, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--cores", "1", "--configfile", str(path), check=False, timeout=300)
    return proc.returncode, proc.stdout


@pytest.mark.parametrize("case", ["bad_line", "odd_box", "unknown_class"])
def test_snakemake_n_refuses_in_one_line_before_any_job(data, case):
    """With denoise on (the default), a bad particle line, an odd box or a class without a
    structure stop `snakemake -n` itself, naming the user's file or key; nothing is written."""
    cfg = config(data)
    if case == "bad_line":
        (data / "shrec/model_1/particle_locations.txt").write_text(LINES + "1BXN 10 20 50 0 0 0\n")
        expected = f"{data}/shrec/model_1/particle_locations.txt:4: coordinate (x=10, y=20, z=50)"
    elif case == "odd_box":
        cfg["extract"] = {"box_size": 23}
        expected = "config key 'extract.box_size': box size 23 is odd"
    else:
        (data / "shrec/model_0/particle_locations.txt").write_text(LINES + "1BXM 1 2 3 0 0 0\n")
        expected = (f"{data}/shrec/model_0/particle_locations.txt:4: class '1bxm' has no "
                    f"structure in structures.path")
    rc, out = dry_run(cfg, data)
    assert rc != 0 and expected in out, out[-3000:]
    assert not (REPO / "results" / cfg["run"]).exists()


def test_snakemake_n_plans_a_good_real_dataset(data):
    cfg = config(data)
    rc, out = dry_run(cfg, data)
    assert rc == 0, out[-3000:]
    assert "denoise_tomogram" in out and "extract_tomogram" in out
    assert not (REPO / "results" / cfg["run"]).exists()


# ---------------------------------------------------------------- boxes
@pytest.mark.parametrize("extract, model, match", [
    ({"box_size": 23}, {}, r"config key 'extract\.box_size': box size 23 is odd -- use an even"),
    ({"box_size": 24}, {"depth": 4}, (r"config key 'model\.depth': the model sees boxes of 24 "
     r"voxels \(set by extract\.box_size\), not divisible by 2\*\*model\.depth = 16 -- set "
     r"model\.depth to 3 or extract\.box_size to a multiple of 16")),
    ({"box_size": 32, "bin_to": 12}, {"depth": 3}, (r"boxes of 12 voxels \(set by "
     r"extract\.bin_to\).* model\.depth to 2")),
    ({"box_size": 32, "bin_to": 33}, {}, r"config key 'extract\.bin_to': 33 must be even"),
])
def test_box_sizes_are_checked_at_planning(data, extract, model, match):
    assert re.search(match, refused(config(data, extract=extract, model=model)))


def test_box_of_a_subtomo_folder_is_read_from_its_first_file_header(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    for c in ("a", "b"):
        write_volume(folder / f"{c}_0.mrc", np.zeros((20, 20, 20), np.float32), 10.0)
    cfg = {"run": "badinput_sub", "dataset": {"source": "subtomo_folder", "path": str(folder)},
           "affinity": {"method": "file", "path": str(tmp_path / "a.csv")},
           "model": {"depth": 3}}
    affinity_csv(tmp_path / "a.csv", ["a", "b"], np.array([[1, .5], [.5, 1]]))
    msg = refused(cfg)
    assert "the model sees boxes of 20 voxels (set by the particle files' box" in msg
    assert "set model.depth to 2" in msg
    cfg["model"]["depth"] = 2
    planned(cfg)


# ---------------------------------------------------------------- a SHREC folder's files
def test_a_bad_particle_line_is_found_at_planning(data):
    (data / "shrec/model_1/particle_locations.txt").write_text(LINES + "1BXN 10 twenty 5 0 0 0\n")
    msg = refused(config(data))
    assert msg.startswith(f"{data}/shrec/model_1/particle_locations.txt:4: field 'twenty' is not "
                          f"a number")


def test_the_tomogram_header_is_checked_at_planning(data):
    msg = refused(config(data, dataset={"voxel_size": 8.0}))
    assert msg.startswith(f"{data}/shrec/model_0/reconstruction.mrc: header voxel size 10 A "
                          f"disagrees with dataset.voxel_size 8 A -- set dataset.voxel_size: 10")
    recon = data / "shrec/model_1/reconstruction.mrc"
    recon.write_bytes(recon.read_bytes()[:100_000])  # a cut download
    msg = refused(config(data))
    assert msg.startswith(f"{recon}: corrupt or truncated MRC file (100000 bytes, its header "
                          f"promises 525312)")


def test_planning_reads_headers_only(data, monkeypatch):
    """The data of a tomogram are never read at planning (header and particle list only)."""
    def no_data(*args, **kwargs):
        raise AssertionError("volume data read at planning")

    monkeypatch.setattr(mrcfile, "mmap", no_data)
    monkeypatch.setattr("affinity_vae.io.mrc.read_volume", no_data)
    monkeypatch.setattr("affinity_vae.io.shrec.read_volume", no_data)
    planned(config(data))


def test_grandmodel_source_needs_the_grandmodel(data):
    msg = refused(config(data, extract={"source": "grandmodel"}))
    assert msg.startswith(f"{data}/shrec/model_0: no grandmodel.mrc -- extract.source "
                          f"grandmodel")


# ---------------------------------------------------------------- class names
def test_an_unknown_class_names_the_line_and_the_structures(data):
    (data / "shrec/model_1/particle_locations.txt").write_text(LINES + "3qm2 1 2 3 0 0 0\n")
    msg = refused(config(data))
    assert msg.startswith(f"{data}/shrec/model_1/particle_locations.txt:4: class '3qm2' has no "
                          f"structure in structures.path '{data}/structures'")
    assert "list it in extract.exclude_classes" in msg
    planned(config(data, extract={"exclude_classes": ["vesicle", "3qm2"]}))
    planned(config(data, dataset={"unseen_classes": ["3QM2"]}))  # unseen: needs no structure


def test_a_class_without_structure_for_isolated_boxes(data):
    cfg = config(data, extract={"source": "isolated"}, dataset={"unseen_classes": ["3qm1"]})
    structures(data / "structures2", names=["1bxn", "4cr2"])
    cfg["structures"]["path"] = str(data / "structures2")
    msg = refused(cfg)
    assert "class '3qm1' has no structure" in msg and "unseen" not in msg


def test_structures_classes_are_checked_against_the_folder_at_planning(data):
    msg = refused(config(data, structures={"classes": ["1bxn", "1S3X"]}))
    assert msg.startswith(f"config key 'structures.classes': no structure for class '1s3x' in "
                          f"structures.path '{data}/structures' -- add it there or remove it")


@pytest.mark.parametrize("section, value, match", [
    ("dataset", {"unseen_classes": ["4cr2"]}, (r"config key 'dataset\.unseen_classes': "
     r"\['4cr2'\] have no particle in the particle_locations\.txt files under dataset\.path")),
    ("extract", {"classes": ["1bxn", "4cr2"]}, (r"config key 'extract\.classes': class\(es\) "
     r"\['4cr2'\] have no particle")),
    ("extract", {"rename": {"1bxm": "x"}}, (r"config key 'extract\.rename': class\(es\) "
     r"\['1bxm'\] do not occur")),
])
def test_class_keys_are_checked_against_the_particle_lists(data, section, value, match):
    assert re.search(match, refused(config(data, **{section: value})))


def test_simulated_classes_are_the_structures(tmp_path):
    cfg = {"run": "badinput_sim", "dataset": {"unseen_classes": ["ring9"]}}
    msg = refused(cfg)
    assert msg.startswith("config key 'dataset.unseen_classes': ['ring9'] have no particle in the "
                          "simulated particles (classes of the generated structures")
    planned({"run": "badinput_sim", "dataset": {"unseen_classes": ["RING7"]}})


# ---------------------------------------------------------------- a user's affinity CSV
def test_a_class_missing_from_the_users_affinity_csv_names_that_csv(data):
    csv = affinity_csv(data / "mine.csv", ["1BXN", "4CR2"], np.array([[1, .2], [.2, 1]]))
    msg = refused(config(data, affinity={"method": "file", "path": str(csv)}))
    assert msg.startswith(f"{csv}: no row and column for class(es) ['3qm1'] of the data (e.g. "
                          f"{data}/shrec/model_0/particle_locations.txt:2) -- add them to this "
                          f"CSV (config key affinity.path)")


def test_affinity_file_method_needs_an_existing_path(data):
    msg = refused(config(data, affinity={"method": "file"}))
    assert msg.startswith("config key 'affinity.path' is required when affinity.method is 'file'")
    msg = refused(config(data, affinity={"method": "file", "path": str(data / "no.csv")}))
    assert msg.startswith(f"config key 'affinity.path': file '{data}/no.csv' not found")


def _extra_classes_csv(path: Path, used_bad: bool = False) -> Path:
    """1bxn, 3qm1 (used) and 4cr2, 5mrc (unused, asymmetric between each other)."""
    v = np.array([[1, .3, .1, .2], [.3, 1, .2, .1], [.1, .2, 1, .9], [.2, .1, .1, 1]])
    if used_bad:
        v[0, 1] = .8
    return affinity_csv(path, ["1bxn", "3qm1", "4cr2", "5mrc"], v)


def test_an_affinity_csv_is_checked_only_on_the_classes_the_run_uses(data, caplog, tmp_path):
    csv = _extra_classes_csv(data / "mine.csv")
    cfg = config(data, affinity={"method": "file", "path": str(csv)})
    with caplog.at_level(logging.WARNING):
        planned(cfg)
    assert "left out of the affinity matrix" in caplog.text and "'5mrc'" in caplog.text
    # the affinity job writes the usable classes and the run trains on them
    aff = {"method": "file", "path": str(csv), "tolerance": 0.01, "overrides": [], "scale": "unit"}
    out = SimpleNamespace(csv=str(tmp_path / "out/affinity.csv"),
                          png=str(tmp_path / "out/affinity.png"))
    main_matrix(SimpleNamespace(input=SimpleNamespace(user=str(csv)), output=out,
                                params=SimpleNamespace(affinity=aff)))
    df = read_affinity_matrix(out.csv, ["1bxn", "3qm1"])
    assert df.loc["1bxn", "3qm1"] == pytest.approx(0.3) and "5mrc" not in df.index
    # asymmetric between two classes the run uses: refused, naming the pair and the user's file
    _extra_classes_csv(csv, used_bad=True)
    msg = refused(cfg)
    assert msg.startswith(f"{csv}: not symmetric: ('1bxn', '3qm1') = 0.8 but ('3qm1', '1bxn') = "
                          f"0.3")


def test_a_used_class_is_never_left_out_for_an_unused_partner(data):
    """A bad value between a used and an unused class: the unused one is left out; when the
    affinity job could not tell which to leave out, planning refuses and names the value."""
    v = np.array([[1, .3, .2], [.3, 1, 5.0], [.2, 5.0, 1]])  # ('3qm1', 'zzz') out of range
    csv = affinity_csv(data / "m.csv", ["1bxn", "3qm1", "zzz"], v)
    cfg = config(data, affinity={"method": "file", "path": str(csv)})
    planned(cfg)
    assert list(read_affinity(csv, check=[])) == ["1bxn", "3qm1"]  # the job's reading
    order = [2, 0, 1]  # zzz first: on the tie the job would leave out 3qm1, the last one
    csv = affinity_csv(data / "m.csv", ["zzz", "1bxn", "3qm1"], v[np.ix_(order, order)])
    msg = refused(cfg)
    assert msg.startswith(f"{csv}: class '3qm1' (used by this run) would be left out for its "
                          f"value with 'zzz': value 5 at ('3qm1', 'zzz') is outside [0, 1]")


def test_job_time_message_points_at_the_users_csv_key(tmp_path):
    csv = affinity_csv(tmp_path / "a.csv", ["a", "b"], np.array([[1, .2], [.2, 1]]))
    with pytest.raises(InputError, match=r"lacks training class\(es\) \['c'\] -- give each a row "
                                         r"and column in your affinity CSV \(config key "
                                         r"affinity\.path"):
        read_affinity_matrix(csv, ["a", "c"])


# ---------------------------------------------------------------- a subtomogram folder
def test_classes_csv_keeps_the_unseen_classes(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    for c, n in (("1bxn", 3), ("3qm1", 3), ("4cr2", 2)):
        for i in range(n):
            write_volume(folder / f"{c}_{i}.mrc", np.full((8, 8, 8), i, np.float32), 10.0)
    (folder / "classes.csv").write_text("1bxn,3qm1\n")  # the training classes
    csv = affinity_csv(tmp_path / "a.csv", ["1bxn", "3qm1"], np.array([[1, .4], [.4, 1]]))
    cfg = {"run": "badinput_sub2", "dataset": {"source": "subtomo_folder", "path": str(folder),
                                               "unseen_classes": ["4CR2"]},
           "affinity": {"method": "file", "path": str(csv)}, "model": {"depth": 2}}
    planned(cfg)
    from affinity_vae.config import schema_defaults

    table = import_folder(folder, tmp_path / "i.mrcs", tmp_path / "i.star",
                          Settings.from_config(schema_defaults("extract")), 10.0,
                          {"test": 0.0, "validation": 0.0}, 0, unseen=["4CR2"])
    assert (table.groupby("avaeClass")["avaeSplit"].first().to_dict()
            == {"1bxn": "train", "3qm1": "train", "4cr2": "unseen"})
    assert len(read_star(tmp_path / "i.star")) == 8
    # a class of classes.csv without files names classes.csv
    (folder / "classes.csv").write_text("1bxn,3qm1,5mrc\n")
    msg = refused(cfg)
    assert msg.startswith(f"{folder}/classes.csv: class(es) ['5mrc'] have no particle in {folder}")


# ---------------------------------------------------------------- the table stays true
def table_rows() -> list[list[str]]:
    rows = []
    text = TABLE.read_text()
    text = text[text.index("<!-- bad-input:begin -->"):text.index("<!-- bad-input:end -->")]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows[1:]  # the header


def test_every_row_of_the_bad_input_table_names_an_existing_test():
    rows = table_rows()
    assert len(rows) >= 20
    for what, message, when, test in rows:
        assert message and when in ("snakemake -n", "job", "snakemake -n + job"), (what, when)
        names = re.findall(r"`?(tests/[\w/]+\.py)::(\w+)`?", test)
        assert names, f"row {what!r} names no test"
        for path, func in names:
            text = (REPO / path).read_text()
            assert re.search(rf"^def {func}\(", text, re.MULTILINE), \
                f"{path}::{func} does not exist"
