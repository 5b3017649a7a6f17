"""Fuzzing the readers of user files and config (hypothesis): random malformed input gives an
InputError (one line) or a valid result -- never another exception, never a hang.

Readers: SHREC particle lists (affinity_vae.io.shrec.read_particle_locations), STAR tables
(affinity_vae.io.star.read_star, read_coordinates_star), affinity CSVs
(affinity_vae.affinity.matrix.read_affinity) and the config (affinity_vae.config.check_config).
Each test draws a bounded number of examples (150, the same ones every run) with a per-example
deadline of 2 s (a reader that hangs fails it).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affinity_vae.affinity.matrix import read_affinity
from affinity_vae.config import check_config
from affinity_vae.errors import InputError
from affinity_vae.io.shrec import COLUMNS, read_particle_locations
from affinity_vae.io.star import STAR_COLUMNS, read_coordinates_star, read_star

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
# AVAE_FUZZ_EXAMPLES=5000 explores further, with a fresh random seed (CI: 150, reproducible).
EXAMPLES = int(os.environ.get("AVAE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=2000, derandomize=EXAMPLES == 150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORK = Path(tempfile.mkdtemp(prefix="avae-fuzz-"))


_COUNT = iter(range(10**9))


def _file(name: str, data: bytes | str) -> Path:
    """A new file per example (a reader must not see the previous example's file)."""
    for old in WORK.iterdir():
        old.unlink()
    path = WORK / f"{next(_COUNT)}-{name}"
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def _one_line(exc: InputError) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg.strip() or " -- " in msg, msg


# ----------------------------------------------------------------- tokens
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-Infinity", "1e999", "-0", "0x10", "1_0",
                     "1,5", "", "+", ".", "e5", "∞", "٣", "1e-400"]))
WORDS = st.one_of(st.sampled_from(["1bxn", "3QM1", "vesicle", "fiducial", "4V94", "#", "\t",
                                   "\\", '"', "'", ",", ";", "data_", "loop_", "_rln"]),
                  st.text(max_size=12))
TOKENS = st.one_of(NUMBERS, WORDS)
LINES = st.lists(st.lists(TOKENS, max_size=9).map(" ".join), max_size=12).map("\n".join)
RAW = st.one_of(LINES, st.binary(max_size=300),
                st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))


# ----------------------------------------------------------------- particle lists
PARTICLE_LINE = st.one_of(
    st.tuples(WORDS, *[NUMBERS] * 6).map(" ".join),  # the right shape, odd values
    st.lists(TOKENS, max_size=10).map(" ".join),      # any shape
    st.just("1bxn 10 20 30 0 90 180  # a good line"),
)
PARTICLE_FILE = st.one_of(st.lists(PARTICLE_LINE, max_size=10).map("\n".join), RAW)


@FUZZ
@given(data=PARTICLE_FILE,
       shape=st.one_of(st.none(), st.tuples(*[st.integers(0, 64)] * 3)),
       classes=st.one_of(st.none(), st.lists(WORDS, max_size=4)))
def test_particle_list_reader(data, shape, classes):
    path = _file("particle_locations.txt", data)
    try:
        table = read_particle_locations(path, shape=shape, classes=classes)
    except InputError as exc:
        _one_line(exc)
        return
    assert list(table.columns) == COLUMNS
    xyz = table[["x", "y", "z"]].to_numpy(float)
    assert np.isfinite(xyz).all()
    if shape is not None:
        assert ((xyz >= 0) & (xyz < np.array(shape[::-1]))).all()


# ----------------------------------------------------------------- STAR
def _star_text(rows: list[list[str]], columns: list[str], block: str) -> str:
    head = [f"data_{block}", "", "loop_"] + [f"_{c} #{i + 1}" for i, c in enumerate(columns)]
    return "\n".join(head + ["\t".join(r) for r in rows]) + "\n"


@st.composite
def star_files(draw) -> str | bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(RAW)
    columns = draw(st.one_of(
        st.just(STAR_COLUMNS),
        st.lists(st.sampled_from(STAR_COLUMNS), min_size=1, max_size=len(STAR_COLUMNS),
                 unique=True),
        st.lists(st.text(min_size=1, max_size=8).filter(lambda s: not any(c.isspace() for c in s)),
                 min_size=1, max_size=4)))
    rows = draw(st.lists(st.lists(TOKENS.filter(lambda s: s.strip() and not any(
        c.isspace() for c in s)), min_size=len(columns), max_size=len(columns)), max_size=5))
    text = _star_text(rows, columns, draw(st.sampled_from(["particles", "other", ""])))
    if kind == 2:  # cut anywhere
        text = text[:draw(st.integers(0, len(text)))]
    if kind == 3:  # a junk line inserted
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        text = "\n".join(lines[:at] + [draw(LINES)] + lines[at:])
    return text


@FUZZ
@given(data=star_files(), shape=st.one_of(st.none(), st.tuples(*[st.integers(1, 64)] * 3)))
def test_star_readers(data, shape):
    path = _file("particles.star", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            table = read_star(path)
        except InputError as exc:
            _one_line(exc)
        else:
            assert set(STAR_COLUMNS) <= set(table.columns)
        try:
            coords = read_coordinates_star(path, shape)
        except InputError as exc:
            _one_line(exc)
        else:
            assert list(coords.columns) == COLUMNS
            assert np.isfinite(coords[["x", "y", "z"]].to_numpy(float)).all()


# ----------------------------------------------------------------- affinity CSV
@st.composite
def affinity_csvs(draw) -> str | bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(RAW)
    n = draw(st.integers(0, 4))
    names = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "A", ""]), WORDS),
                          min_size=n, max_size=n))
    good = draw(st.booleans())
    cell = NUMBERS if not good else st.floats(0, 1).map(lambda v: f"{v:.3f}")
    rows = [[names[i]] + [("1" if i == j and good else draw(cell)) for j in range(n)]
            for i in range(n)]
    if good and n:  # symmetric
        for i in range(n):
            for j in range(i):
                rows[i][j + 1] = rows[j][i + 1]
    sep = draw(st.sampled_from([",", ";", "\t", ", "]))
    lines = [sep.join([""] + names)] + [sep.join(r) for r in rows]
    if draw(st.booleans()):  # a ragged row or a junk line
        lines.insert(draw(st.integers(0, len(lines))), draw(LINES))
    return "\n".join(lines)


@FUZZ
@given(data=affinity_csvs(), scale=st.sampled_from(["unit", "signed", "keep"]),
       check=st.sampled_from([None, (), ("a",)]),
       classes=st.one_of(st.none(), st.just(["a", "b"])))
def test_affinity_reader(data, scale, check, classes):
    path = _file("affinity.csv", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            df = read_affinity(path, classes=classes, scale=scale, check=check)
        except InputError as exc:
            _one_line(exc)
            return
    values = df.to_numpy(float)
    assert values.shape[0] == values.shape[1] and np.isfinite(values).all()
    assert np.allclose(values, values.T) and np.allclose(np.diag(values), 1)


# Found by fuzzing in files another change owns; the markers go when the fixes are in.
def test_an_unterminated_quote_in_a_long_affinity_csv(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(",a,b\na,1,0.5\nb,0.5,1\n\"" + "x\n" * 70000)
    with pytest.raises(InputError):
        read_affinity(path)


def test_class_names_differing_only_in_case_are_duplicates(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(",a,A\na,1,0.5\nA,0.5,1\n")
    with pytest.raises(InputError, match="duplicated"):
        read_affinity(path)


# ----------------------------------------------------------------- config
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.builds(list),
              st.builds(dict),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
              st.sampled_from(["null", "~", "[1, 2]", "{a: 1}", "true", "1e3", "'", "{",
                               "auto", "cpu", "dir", ".", "..", "a/b", "model_0"])),
    lambda children: st.one_of(st.lists(children, min_size=1, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, min_size=1,
                                               max_size=3)),
    max_leaves=8)


def _paths(cfg, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for k, v in cfg.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


_FILLED = copy.deepcopy(TINY)
check_config(_FILLED, SCHEMA)  # every known key, with the schema's defaults
KNOWN = sorted(_paths(_FILLED))


@st.composite
def configs(draw) -> dict:
    cfg = copy.deepcopy(draw(st.sampled_from([TINY, _FILLED])))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.one_of(st.sampled_from(KNOWN),
                               st.sampled_from(KNOWN).flatmap(
                                   lambda p: st.text(min_size=1, max_size=8).map(
                                       lambda k, p=p: (*p[:-1], k)))))
        node = cfg
        for key in where[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[where[-1]] = draw(VALUES)
    return cfg


@FUZZ
@given(cfg=configs())
def test_config_checker(cfg):
    try:
        check_config(cfg, SCHEMA)
    except InputError as exc:
        _one_line(exc)
        assert " -- " in str(exc) or "config key" in str(exc) or "unknown" in str(exc)
        return
    assert isinstance(cfg["run"], str) and cfg["run"]


@FUZZ
@given(top=st.dictionaries(st.text(max_size=10), VALUES, max_size=5))
def test_config_checker_on_any_mapping(top):
    try:
        check_config(top, SCHEMA)
    except InputError as exc:
        _one_line(exc)


def test_a_star_file_rewritten_after_a_failed_read_is_read_anew(tmp_path):
    """starfile's linecache kept a failed read's lines: the fixed file read as the broken one."""
    path = tmp_path / "p.star"
    good = _star_text([["1", "2", "3"]], ["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"],
                      "particles")
    path.write_text(good.replace("1\t2\t3", "1\t2\t3\t4\n1\t2"))
    with pytest.raises(InputError, match="unreadable STAR file"):
        read_coordinates_star(path)
    path.write_text(good)
    assert read_coordinates_star(path)[["x", "y", "z"]].to_numpy().tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(("column", "cell"), [("avaeEulerZ2", "0x10"), ("rlnAngleRot", "True"),
                                             ("rlnCoordinateX", "abc"), ("rlnCoordinateY", "inf"),
                                             ("avaeStackIndex", "nan")])
def test_a_non_numeric_star_cell_is_an_input_error(tmp_path, column, cell):
    """Fuzzing found: a non-numeric angle crashed read_coordinates_star (ValueError), and
    read_star returned text where numbers belong."""
    row = ["model_0"] + ["1"] * 7 + ["1@model_0.mrcs", "a", "train", "0", "1", "1", "1"]
    row[STAR_COLUMNS.index(column)] = cell
    path = tmp_path / "p.star"
    path.write_text(_star_text([row], STAR_COLUMNS, "particles"))
    with pytest.raises(InputError, match=f"particle 1 has a non-(numeric|finite) {column}"):
        read_star(path)
    if column.startswith(("avaeEuler", "rlnCoordinate")):
        with pytest.raises(InputError, match="particle 1 has a non-"):
            read_coordinates_star(path)


def test_nan_angles_are_allowed_in_star_files(tmp_path):
    row = ["model_0"] + ["1"] * 3 + ["nan"] * 3 + ["1", "1@model_0.mrcs", "a", "train", "0",
                                                   "nan", "NaN", "1"]
    path = tmp_path / "p.star"
    path.write_text(_star_text([row], STAR_COLUMNS, "particles"))
    assert read_star(path)["rlnAngleRot"].isna().all()
    assert np.isnan(read_coordinates_star(path)["z1"]).all()


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 10**40, [], {}])
def test_config_run_name_is_checked(value):
    cfg = copy.deepcopy(TINY)
    cfg["run"] = value
    with pytest.raises(InputError):
        check_config(cfg, SCHEMA)


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# What fuzzing found in check_config (each a crash or a hang before the fix).
@pytest.mark.parametrize(("section", "value", "words"), [
    ("train", {"epochs": "[" * 3000 + "]" * 3000}, "nested"),  # --config string: RecursionError
    ("train", {"epochs": _nested(2000)}, "nested"),            # RecursionError
    ("dataset", {"voxel_size": math.nan}, "finite"),          # YAML .nan passed the schema
    ("dataset", {"voxel_size": math.inf}, "finite"),
    ("train", {"epochs": list(range(10**5))}, "not of type"),  # a 500 kB one-line message
])
def test_config_fuzz_findings_are_input_errors(section, value, words):
    cfg = copy.deepcopy(TINY)
    cfg.setdefault(section, {}).update(value)
    with pytest.raises(InputError, match=words) as exc:
        check_config(cfg, SCHEMA)
    assert len(str(exc.value)) < 400


def test_a_huge_tomogram_count_is_checked_without_listing_it():
    """simulate.n_tomograms: 10**9 listed every model_<i> name (minutes, gigabytes)."""
    cfg = copy.deepcopy(TINY)
    cfg["simulate"]["n_tomograms"] = 10**9
    cfg["dataset"]["splits"] = {"test": ["model_999999999"], "validation": ["model_0"]}
    check_config(cfg, SCHEMA)
    cfg = copy.deepcopy(TINY)
    cfg["simulate"]["n_tomograms"] = 10**9
    cfg["dataset"]["splits"] = {"test": None}
    check_config(cfg, SCHEMA)
    assert cfg["dataset"]["splits"]["test"] == ["model_999999999"]
    for bad in ("model_1000000000", "model_01", "model_-1", "model_１"):
        cfg = copy.deepcopy(TINY)
        cfg["simulate"]["n_tomograms"] = 10**9
        cfg["dataset"]["splits"] = {"test": [bad]}
        with pytest.raises(InputError, match="model_0 .. model_999999999"):
            check_config(cfg, SCHEMA)


@pytest.mark.parametrize("top", [None, [], "run: x", 5])
def test_a_config_that_is_not_a_mapping(top):
    with pytest.raises(InputError, match="not a mapping"):
        check_config(top, SCHEMA)
