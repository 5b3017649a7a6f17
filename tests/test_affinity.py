"""Stage `affinity`: SOAP and FSC are rotation/translation invariant, rank near-twins above
unrelated shapes, recover shape families, agree on the SHREC structures; the CSV validator and
the rule entries reject bad input with one line and write nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import gemmi
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation
from scipy.stats import spearmanr

from affinity_vae.affinity import (
    compute_affinity,
    from_paths,
    main,
    main_matrix,
    read_affinity,
    read_structures_dir,
)
from affinity_vae.affinity.fsc import fsc_matrix, octahedral_group
from affinity_vae.affinity.matrix import cluster_labels, write_affinity
from affinity_vae.config import schema_defaults
from affinity_vae.errors import InputError
from affinity_vae.io.mrc import write_volume

REPO = Path(__file__).resolve().parents[1]
VOXEL = 10.0
# an arbitrary rotation (ZXZ Euler) and a translation that is not a whole number of voxels
ROT = Rotation.from_euler("ZXZ", [37.0, 61.0, 113.0], degrees=True).as_matrix()
SHIFT = np.array([7.3, -12.1, 4.4])


@pytest.fixture(scope="module")
def cfg() -> dict:
    """The stage's config section with the schema defaults."""
    return schema_defaults("affinity")


def blobs(centres, radii, seed=0, spacing=5.0) -> np.ndarray:
    """Pseudo-atoms (n, 3) in Angstrom filling a union of spheres on a jittered lattice."""
    rng = np.random.default_rng(seed)
    centres, radii = np.asarray(centres, float), np.asarray(radii, float)
    lo, hi = (centres - radii[:, None]).min(0), (centres + radii[:, None]).max(0)
    axes = [np.arange(a, b + spacing, spacing) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    grid = grid + rng.uniform(-0.3 * spacing, 0.3 * spacing, grid.shape)
    inside = np.zeros(len(grid), bool)
    for c, r in zip(centres, radii):
        inside |= ((grid - c) ** 2).sum(1) <= r * r
    return grid[inside]


def ring(n: int, r_sub: float = 20.0, seed: int = 0) -> np.ndarray:
    big = 0.9 * r_sub / np.sin(np.pi / n)
    t = 2 * np.pi * np.arange(n) / n
    return blobs(np.stack([big * np.cos(t), big * np.sin(t), 0 * t], 1), [r_sub] * n, seed)


def rod(length: float, r: float = 20.0, seed: int = 0) -> np.ndarray:
    k = max(2, int(length / r) + 1)
    z = np.linspace(-length / 2, length / 2, k)
    return blobs(np.stack([0 * z, 0 * z, z], 1), [r] * k, seed)


#: an asymmetric molecule: three different globules off any symmetry axis
ASYM = blobs([[0, 0, 0], [38, 5, 0], [-10, 30, 18]], [22, 16, 12], seed=3)


def write_pdb(path: Path, xyz: np.ndarray, element: str = "C") -> Path:
    st = gemmi.Structure()
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    for i, p in enumerate(xyz):
        res = gemmi.Residue()
        res.name, res.seqid = "GLY", gemmi.SeqId(i + 1, " ")
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = "CA", gemmi.Element(element), gemmi.Position(*p)
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    st.write_pdb(str(path))
    return path


def density(xyz: np.ndarray, box: int = 40, sigma: float = 8.0) -> np.ndarray:
    """Exact sum of Gaussians (width ``sigma`` A) at the atoms, (z, y, x) at VOXEL A, atoms'
    origin at the box centre: no interpolation in making the test maps."""
    ax = (np.arange(box) - box // 2) * VOXEL
    g = [np.exp(-((ax[None, :] - xyz[:, d : d + 1]) ** 2) / (2 * sigma**2)) for d in range(3)]
    return np.einsum("az,ay,ax->zyx", g[2], g[1], g[0]).astype(np.float32)


def moved(xyz: np.ndarray) -> np.ndarray:
    return xyz @ ROT.T + SHIFT


# --- invariance --------------------------------------------------------------------------


def test_soap_rotated_translated_copy_scores_at_least_099(tmp_path, cfg):
    a = write_pdb(tmp_path / "a.pdb", ASYM)
    b = write_pdb(tmp_path / "b.pdb", moved(ASYM))
    u = write_pdb(tmp_path / "u.pdb", rod(120.0))
    cs = from_paths({"a": a, "b": b, "u": u}, {})
    for coarse in ("grid", "none"):
        c = copy.deepcopy(cfg)
        c["soap"]["coarse"] = coarse
        if coarse == "none":  # all-atom SOAP at the chemistry scale
            c["soap"].update(r_cut=8.0, sigma=1.0, zeta=2)
        df = compute_affinity(cs, "soap", c)
        assert df.loc["a", "b"] >= 0.99, coarse
        assert np.allclose(df, df.T) and np.all(np.diag(df) == 1)
    assert df.loc["a", "u"] < df.loc["a", "b"]


def test_fsc_rotated_translated_copy_scores_at_least_099(cfg):
    # Both maps are computed exactly from the atoms; the only approximation is the cubic-spline
    # resampling of each map into its principal frame (the arbitrary rotation must be found).
    vols = {"a": density(ASYM), "b": density(moved(ASYM)), "u": density(rod(150.0))}
    m = fsc_matrix(vols, VOXEL, resolution=cfg["fsc"]["resolution_A"], n_rotations=0)
    assert m[0, 1] >= 0.99
    assert m[0, 2] < 0.9
    # a rotation of the octahedral set is applied exactly: FSC 1 up to float rounding
    g = octahedral_group()[7]
    vols_exact = {"a": vols["a"], "b": np.ascontiguousarray(
        np.transpose(vols["a"], np.argmax(np.abs(g), axis=1)))}
    assert fsc_matrix(vols_exact, VOXEL, resolution=30.0, n_rotations=0)[0, 1] > 0.99


def test_octahedral_group_is_the_24_proper_signed_permutations():
    g = octahedral_group()
    assert g.shape == (24, 3, 3) and np.allclose(g[0], np.eye(3))
    assert np.allclose(np.linalg.det(g), 1)
    assert len({tuple(m.ravel()) for m in g.astype(int)}) == 24


# --- near-twins and families ----------------------------------------------------------------


def test_own_near_twins_score_higher_than_unrelated(tmp_path, cfg):
    shapes = {"ring6": ring(6), "ring7": ring(7, seed=1), "rod": rod(160.0)}
    pdbs, maps = {}, {}
    for name, xyz in shapes.items():
        pdbs[name] = write_pdb(tmp_path / f"{name}.pdb", xyz)
        maps[name] = tmp_path / f"{name}.mrc"
        write_volume(maps[name], density(xyz - xyz.mean(0), box=36), VOXEL)
    cs = from_paths(pdbs, maps)
    for method in ("soap", "fsc"):
        df = compute_affinity(cs, method, cfg)
        assert df.loc["ring6", "ring7"] > df.loc["ring6", "rod"], method
        assert df.loc["ring6", "ring7"] > df.loc["ring7", "rod"], method


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Generated molecules of three shape families (the structures stage's generator)."""
    build = pytest.importorskip("affinity_vae.structures").build_structures
    out = tmp_path_factory.mktemp("structures") / "structures"
    classes = ["ring5", "ring6", "ring7", "rod_short", "rod_long", "barrel", "barrel_capped"]
    build(schema_defaults("structures", {"source": "generated", "classes": classes}), VOXEL, 0,
          out)
    return out


@pytest.mark.parametrize("method", ["soap", "fsc"])
def test_generated_families_recovered_by_clustering(generated, cfg, method):
    cs = read_structures_dir(generated)
    df = compute_affinity(cs, method, cfg)
    fam = [cs.families[n] for n in cs.names]
    labels = cluster_labels(df.to_numpy(), len(set(fam)))
    # same family <=> same cluster
    same_fam = np.equal.outer(fam, fam)
    assert (np.equal.outer(labels, labels) == same_fam).all(), dict(zip(cs.names, labels))
    # each near-twin pair is more affine than its members are, on average, to other families
    # (not than *every* other class: SOAP puts rod_long at 0.92 to ring5 vs 0.91 to rod_short,
    # both being 5-nm-thick tubes locally; see docs/affinity.md)
    a = df.to_numpy()
    for twin_a, twin_b in [("ring6", "ring7"), ("rod_short", "rod_long"),
                           ("barrel", "barrel_capped")]:
        i, j = cs.names.index(twin_a), cs.names.index(twin_b)
        cross = np.concatenate([a[i][~same_fam[i]], a[j][~same_fam[j]]])
        assert a[i, j] > cross.mean(), (twin_a, method)


# --- SHREC structures ---------------------------------------------------------------------


def test_shrec_matrices_finite_symmetric_and_methods_agree(shrec_structures, cfg):
    maps = {p.stem: p for p in sorted((shrec_structures / "maps_10A").glob("*.mrc"))}
    pdbs = {p.stem: p for p in sorted((shrec_structures / "pdb").glob("*.pdb"))}
    cs = from_paths(pdbs, maps)
    assert len(cs.names) == 13
    out = {m: compute_affinity(cs, m, cfg).to_numpy() for m in ("soap", "fsc")}
    for m, a in out.items():
        assert np.isfinite(a).all() and np.allclose(a, a.T) and np.allclose(np.diag(a), 1), m
        assert a.min() >= 0 and a.max() <= 1
    iu = np.triu_indices(13, 1)
    rho = spearmanr(out["soap"][iu], out["fsc"][iu]).statistic
    assert rho > 0.2, rho


# --- the CSV validator ----------------------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_affinity_reads_both_formats_and_orders_classes(tmp_path):
    ref = _csv(tmp_path / "ref.csv", "a,b,c\n1,0.5,-0.2\n0.5,1,0.1\n-0.2,0.1,1\n")
    df = read_affinity(ref, classes=["c", "a"])
    assert list(df.index) == ["c", "a"] and df.loc["a", "c"] == pytest.approx(-0.2)
    ours = tmp_path / "ours.csv"
    write_affinity(read_affinity(ref), ours)
    assert read_affinity(ours).equals(read_affinity(ref).round(6))
    # a reference-style matrix asymmetric within tolerance is symmetrised
    near = _csv(tmp_path / "near.csv", "a,b\n1,0.500\n0.504,1\n")
    assert read_affinity(near).loc["a", "b"] == pytest.approx(0.502)


@pytest.mark.parametrize("text, scale, match", [
    ("a,b\n1,0.5\n0.5,1\n", "keep", "missing"),
    ("a,b,c\n1,0.5,0.1\n0.9,1,0.1\n0.1,0.1,1\n", "keep", "not symmetric"),
    ("a,b,c\n1,-0.5,0.1\n-0.5,1,0.1\n0.1,0.1,1\n", "unit", "outside"),
    ("a,b,c\n1,1.5,0.1\n1.5,1,0.1\n0.1,0.1,1\n", "keep", "outside"),
    ("a,b,c\n1,x,0.1\nx,1,0.1\n0.1,0.1,1\n", "keep", "non-numeric"),
    ("a,a,c\n1,0.5,0.1\n0.5,1,0.1\n0.1,0.1,1\n", "keep", "duplicated"),
    ("a,b,c\n0.5,0.5,0.1\n0.5,1,0.1\n0.1,0.1,1\n", "keep", "diagonal"),
    ("a,b,c\n1,nan,0.1\nnan,1,0.1\n0.1,0.1,1\n", "keep", "non-finite"),
])
def test_bad_csv_raises_one_line(tmp_path, text, scale, match):
    path = _csv(tmp_path / "m.csv", text)
    with pytest.raises(InputError, match=match) as exc:
        read_affinity(path, classes=["a", "b", "c"], scale=scale)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def _smk(tmp_path, cfg, method="file", path=None, **inputs):
    c = copy.deepcopy(cfg)
    c.update(method=method, path=str(path) if path else None)
    out = SimpleNamespace(csv=str(tmp_path / "out" / "x.csv"), png=str(tmp_path / "out" / "x.png"))
    return SimpleNamespace(input=SimpleNamespace(**inputs), output=out, threads=1,
                           params=SimpleNamespace(affinity=c, seed=0),
                           wildcards=SimpleNamespace(method=method))


def test_file_method_overrides_and_scale(tmp_path, cfg):
    src = _csv(tmp_path / "m.csv", "a,b,c\n1,0.5,0.1\n0.5,1,0.2\n0.1,0.2,1\n")
    smk = _smk(tmp_path, cfg, path=src)
    smk.params.affinity.update(overrides=[["a", "c", 0.8]], scale="signed")
    main_matrix(smk)
    df = read_affinity(smk.output.csv, scale="signed")
    assert df.loc["a", "c"] == pytest.approx(0.6) and df.loc["c", "a"] == pytest.approx(0.6)
    assert df.loc["a", "b"] == pytest.approx(0.0) and np.allclose(np.diag(df), 1)
    assert Path(smk.output.png).is_file()


@pytest.mark.parametrize("text", ["a,b\n1,0.5\n0.9,1\n", "a,b\n1,y\ny,1\n", "a,a\n1,0\n0,1\n",
                                  "a,b\n1,2\n2,1\n"])
def test_bad_file_writes_nothing(tmp_path, cfg, text):
    smk = _smk(tmp_path, cfg, path=_csv(tmp_path / "m.csv", text))
    with pytest.raises(InputError):
        main_matrix(smk)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_override_class_raises(tmp_path, cfg):
    smk = _smk(tmp_path, cfg, path=_csv(tmp_path / "m.csv", "a,b\n1,0.5\n0.5,1\n"))
    smk.params.affinity["overrides"] = [["a", "zz", 0.3]]
    with pytest.raises(InputError, match="unknown class 'zz'"):
        main_matrix(smk)


def test_structure_without_atoms_or_map_raises_and_writes_nothing(tmp_path, cfg):
    folder = tmp_path / "structures"
    folder.mkdir()
    write_pdb(folder / "a.pdb", ASYM)
    write_pdb(folder / "b.pdb", rod(100.0))
    pd.DataFrame({"class": ["a", "b", "c"], "family": ["", "", ""], "source": ["dir"] * 3,
                  "n_atoms": [1, 1, 0], "radius_A": [1.0] * 3,
                  "has_atoms": [True, True, False]}).to_csv(folder / "manifest.csv", index=False)
    smk = _smk(tmp_path, cfg, method="soap", structures=str(folder))
    with pytest.raises(InputError, match="neither atoms") as exc:
        main(smk)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    # a PDB file without atoms is refused the same way
    (folder / "manifest.csv").unlink()
    (folder / "c.pdb").write_text("REMARK nothing here\nEND\n")
    with pytest.raises(InputError, match="c.pdb"):
        main(smk)
    assert not (tmp_path / "out").exists()
