"""Readers against pymatgen/ASE as oracles, ids, order, duplicates and rejection reasons."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastgap.readers import (
    DuplicateIds,
    RawItem,
    ReadPolicy,
    check_paths,
    file_id,
    iter_raw,
    iter_structures,
    parse_raw,
    read_structures,
)
from fastgap.structures import Reject, Structure, make_structure

DATA = Path(__file__).parent / "data" / "readers"
MP_CIFS = ["mp-1000", "mp-877", "mp-9460"]
GEMMI, PYMATGEN = ReadPolicy(cif_engine="gemmi"), ReadPolicy(cif_engine="pymatgen")


def pymatgen_cif(path: Path):
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(str(path)).parse_structures(primitive=False)[0]


def only(records: list) -> Structure:
    assert len(records) == 1 and isinstance(records[0], Structure), records
    return records[0]


def reject_of(path: Path | str, policy: ReadPolicy | None = None) -> Reject:
    records = list(iter_structures([path], policy))
    assert len(records) == 1 and isinstance(records[0], Reject), records
    return records[0]


def assert_same_crystal(a: Structure, b_lattice, b_frac, b_numbers, *, atol: float) -> None:
    """Same lattice parameters, species and fractional coordinates up to wrapping."""
    np.testing.assert_allclose(
        np.linalg.norm(a.lattice, axis=1), np.linalg.norm(b_lattice, axis=1), rtol=0, atol=atol
    )
    np.testing.assert_allclose(
        a.lattice @ a.lattice.T, b_lattice @ b_lattice.T, rtol=0, atol=atol * 10
    )
    assert a.numbers.tolist() == list(b_numbers)
    d = np.mod(a.frac_coords - b_frac + 0.5, 1.0) - 0.5
    np.testing.assert_allclose(d, 0.0, rtol=0, atol=atol)


# ---------------------------------------------------------------- CIF


@pytest.mark.parametrize("mp_id", MP_CIFS)
def test_cif_paths_match_pymatgen_and_jsonl(mp_id: str) -> None:
    path = DATA / f"{mp_id}.cif"
    ref = pymatgen_cif(path)
    fast = only(read_structures([path], GEMMI))
    slow = only(read_structures([path], PYMATGEN))
    for s in (fast, slow):
        assert s.id == mp_id and s.source == str(path)
        np.testing.assert_allclose(s.lattice, ref.lattice.matrix, rtol=0, atol=1e-9)
        np.testing.assert_allclose(s.frac_coords, ref.frac_coords, rtol=0, atol=1e-12)
        assert s.numbers.tolist() == [site.specie.Z for site in ref]
    (rec,) = [r for r in read_structures([DATA / "sample.jsonl.gz"]) if r.id == mp_id]
    # the CIF prints 8 decimals and orients the cell its own way: compare parameters
    assert_same_crystal(fast, rec.lattice, rec.frac_coords, rec.numbers.tolist(), atol=1e-6)


@pytest.mark.parametrize("policy", [GEMMI, PYMATGEN], ids=["gemmi", "pymatgen"])
def test_cif_symmetry_is_applied(policy: ReadPolicy) -> None:
    s = only(read_structures([DATA / "nacl_fm3m.cif"], policy))
    assert s.n_atoms == 8 and sorted(s.numbers.tolist()) == [11] * 4 + [17] * 4
    ref = pymatgen_cif(DATA / "nacl_fm3m.cif")
    key = lambda z, f: (z, *np.round(np.mod(f, 1.0), 6))
    ours = sorted(key(z, f) for z, f in zip(s.numbers, s.frac_coords))
    theirs = sorted(key(site.specie.Z, site.frac_coords) for site in ref)
    assert ours == theirs
    np.testing.assert_allclose(s.lattice, np.eye(3) * 5.6402, rtol=0, atol=1e-9)


def test_cif_disorder_rejected_or_majority() -> None:
    path = DATA / "disordered.cif"
    assert reject_of(path).reason.startswith("disorder: site 'Fe1' is partially occupied")
    assert "partially occupied" in reject_of(path, PYMATGEN).reason
    for engine in ("gemmi", "pymatgen"):
        s = only(read_structures([path], ReadPolicy(disorder="majority", cif_engine=engine)))
        assert s.numbers.tolist() == [26, 26]


def test_cif_fallback_for_what_gemmi_cannot_read() -> None:
    path = DATA / "duptag.cif"
    assert "gemmi cannot read it" in reject_of(path, GEMMI).reason
    s = only(read_structures([path]))
    ref = only(read_structures([DATA / "mp-877.cif"], GEMMI))
    np.testing.assert_allclose(s.lattice, ref.lattice, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.frac_coords, ref.frac_coords, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "policy", "match"),
    [
        ("corrupt.cif", None, r"neither gemmi \(.*unterminated.*\) nor pymatgen"),
        ("corrupt.cif", GEMMI, "gemmi cannot read it"),
        ("corrupt.cif", PYMATGEN, "pymatgen cannot read it"),
        ("empty.cif", None, "file: empty"),
    ],
)
def test_cif_malformed_rejected(name: str, policy: ReadPolicy | None, match: str) -> None:
    r = reject_of(DATA / name, policy)
    assert r.id == Path(name).stem
    with pytest.raises(ValueError, match=match):
        read_structures([DATA / name], policy)


def _cif_item(text: str) -> RawItem:
    return RawItem("x", "x.cif", "cif", text.encode())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("Na1 Na", "Xx1 Xx"), "species: unknown element 'Xx'"),
        (lambda t: t.replace("_cell_length_a 5.6402\n", ""), "has no _cell_length_a"),
        (lambda t: t[: t.index("loop_")], "has no atom sites"),
        (lambda t: t.replace("Cl1 Cl 0.5 0.5 0.5", "Cl1 Cl 0.0 0.0 0.0"), "same position"),
        (lambda t: "# no block\n", "no data block"),
    ],
)
def test_cif_invalid_content_rejected(edit, match: str) -> None:
    text = edit((DATA / "nacl_fm3m.cif").read_text())
    (r,) = parse_raw(_cif_item(text))
    assert isinstance(r, Reject)
    with pytest.raises(ValueError, match=match):
        raise ValueError(r.reason)


def test_cif_binary_rejected() -> None:
    (r,) = parse_raw(RawItem("x", "x.cif", "cif", b"\xff\xfe\x00binary"))
    assert r.reason.startswith("file: not UTF-8 text")


# ---------------------------------------------------------------- POSCAR


def test_poscar_direct_matches_pymatgen() -> None:
    from pymatgen.io.vasp import Poscar

    path = DATA / "Si" / "POSCAR"
    s = only(read_structures([path]))
    assert s.id == "Si_POSCAR"
    ref = Poscar.from_file(str(path)).structure
    np.testing.assert_allclose(s.lattice, ref.lattice.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.frac_coords, ref.frac_coords, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.lattice[0], [0.0, 2.715, 2.715], rtol=0, atol=1e-12)


def test_poscar_cartesian_scaled_matches_pymatgen() -> None:
    from pymatgen.io.vasp import Poscar

    path = DATA / "GaAs_cart.vasp"
    s = only(read_structures([path]))
    assert s.id == "GaAs_cart" and s.numbers.tolist() == [31, 33]
    ref = Poscar.from_file(str(path)).structure
    np.testing.assert_allclose(s.lattice, ref.lattice.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.frac_coords, ref.frac_coords, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.frac_coords[1], [0.25] * 3, rtol=0, atol=1e-12)


def test_poscar_negative_scale_is_volume() -> None:
    text = (DATA / "Si" / "POSCAR").read_text().replace("5.43", "-100.0")
    s = only(parse_raw(RawItem("v", "v.vasp", "poscar", text)))
    assert abs(np.linalg.det(s.lattice)) == pytest.approx(100.0, rel=1e-12)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("Si\n2\n", "2\n"), "no species line"),
        (lambda t: "\n".join(t.splitlines()[:9]), "file ends early"),
        (lambda t: t.replace("0.25 0.25 0.25", "0.25 abc 0.25"), "malformed number"),
        (lambda t: t.replace("Si\n2\n", "Si Ge\n2\n"), "2 species but 1 counts"),
        (lambda t: t.replace("Si\n2\n", "Qq\n2\n"), "expected element symbols H..Og, got 'Qq'"),
        (lambda t: t.replace("0.5 0.5 0.0", "0.5 0.5"), "expected 3 numbers on line '0.5 0.5'"),
        (lambda t: t.replace("5.43\n", "5.43 1.0\n"), "expected 1 or 3 scale factors, got 2"),
    ],
)
def test_poscar_malformed_rejected(edit, match: str) -> None:
    text = edit((DATA / "Si" / "POSCAR").read_text())
    (r,) = parse_raw(RawItem("p", "p.vasp", "poscar", text))
    assert isinstance(r, Reject) and r.id == "p"
    with pytest.raises(ValueError, match=match):
        raise ValueError(r.reason)


# ---------------------------------------------------------------- extxyz


def test_extxyz_frames_match_ase() -> None:
    from ase.io import read

    path = DATA / "frames.extxyz"
    frames = read(str(path), index=":")
    records = read_structures([path])
    assert [r.id for r in records] == ["frames:0", "frames:1"]
    assert [r.pbc for r in records] == [(True,) * 3, (False,) * 3]
    np.testing.assert_allclose(records[0].cart_coords, frames[0].positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(records[0].lattice, frames[0].cell[:], rtol=0, atol=1e-12)
    mol = records[1]
    np.testing.assert_allclose(
        mol.cart_coords - mol.cart_coords[0],
        frames[1].positions - frames[1].positions[0],
        rtol=0,
        atol=1e-12,
    )
    assert records[0].properties["energy"] == -10.8 and records[1].properties["energy"] == -14.2


def test_extxyz_frame_ids_come_from_the_comment_line() -> None:
    text = (
        "3\nid=water\nO 0 0 0.117\nH 0 0.757 -0.469\nH 0 -0.757 -0.469\n"
        "1\nenergy=-1.0\nHe 0 0 0\n"
        "1\nid=\"\"\nNe 0 0 0\n"
    )
    records = parse_raw(RawItem("m", "m.xyz", "xyz", text))
    assert [r.id for r in records] == ["water", "m:1", "m:2"]
    assert all(isinstance(r, Structure) for r in records)


def test_extxyz_malformed_rejected() -> None:
    (r,) = parse_raw(RawItem("f", "f.xyz", "xyz", "3\ncomment\nSi 0 0 0\n"))
    with pytest.raises(ValueError, match="extxyz: cannot parse"):
        raise ValueError(r.reason)


# ---------------------------------------------------------------- JSON-lines


def test_jsonl_sample_ids_order_and_molecules() -> None:
    records = read_structures([DATA / "sample.jsonl.gz"])
    ids = [r.id for r in records]
    assert ids[:3] == MP_CIFS and ids[-3:] == ["qm9-000001", "qm9-000002", "qm9-000003"]
    assert len(records) == 13 and records[4].source.endswith("sample.jsonl.gz:line 5")
    assert all(r.pbc == (True,) * 3 for r in records[:10])
    assert all(r.pbc == (False,) * 3 for r in records[10:])
    assert records[0].properties["band_gap_eV"] == 1.8555


def test_jsonl_records_match_pymatgen() -> None:
    import orjson
    from pymatgen.core import Molecule
    from pymatgen.core import Structure as PmgStructure

    with gzip.open(DATA / "sample.jsonl.gz", "rb") as fh:
        raw = [orjson.loads(line) for line in fh]
    for rec, s in zip(raw, read_structures([DATA / "sample.jsonl.gz"])):
        if "lattice" in rec:
            ref = PmgStructure(rec["lattice"], rec["species"], rec["frac_coords"])
            np.testing.assert_array_equal(s.lattice, ref.lattice.matrix)
            np.testing.assert_array_equal(s.frac_coords, ref.frac_coords)
        else:
            ref = Molecule(rec["species"], rec["positions"])
            np.testing.assert_allclose(
                s.cart_coords - s.cart_coords[0],
                ref.cart_coords - ref.cart_coords[0],
                rtol=0,
                atol=1e-9,
            )
        assert s.numbers.tolist() == [site.specie.Z for site in ref]


GOOD = (
    '{"id":"a","lattice":[[3,0,0],[0,3,0],[0,0,3]],"species":["Na","Cl"],'
    '"frac_coords":[[0,0,0],[0.5,0.5,0.5]],"properties":{"gap":1,"ok":true,"none":null,"t":"x"}}'
)


@pytest.mark.parametrize(
    ("line", "reject_id", "match"),
    [
        ("{not json", None, "JSON: malformed line"),
        ("[1, 2]", None, "record: expected a JSON object, got list"),
        (GOOD.replace('"id":"a"', '"id":3'), None, "id: expected a non-empty string, got 3"),
        (GOOD.replace('["Na","Cl"]', '"NaCl"'), "a", "species: expected a list"),
        (GOOD.replace('"Cl"', '"X"'), "a", "expected element symbols H..Og, got 'X'"),
        (GOOD.replace('["Na","Cl"]', '["Na"]'), "a", "to match numbers"),
        (
            GOOD.replace('["Na","Cl"]', "[]")
            .replace("[0.5,0.5,0.5]]", "]")
            .replace("[[0,0,0],", "["),
            "a",
            "expected at least one atom",
        ),
        (GOOD.replace(",[0,0,3]]", "]"), "a", r"lattice: expected shape \(3, 3\)"),
        (GOOD.replace("[0.5,0.5,0.5]", "[0.5,0.5]"), "a", "expected numeric arrays"),
        (GOOD.replace("[0,0,3]", "[0,0,0]"), "a", "non-singular"),
        (GOOD.replace("[0.5,0.5,0.5]", "[1,0,0]"), "a", "same position"),
        (GOOD.replace("[0.5,0.5,0.5]", "[null,0,0]"), "a", "frac_coords: expected finite"),
        (GOOD.replace(',"frac_coords":[[0,0,0],[0.5,0.5,0.5]]', ""), "a", "frac_coords: missing"),
        (GOOD.replace('"lattice"', '"cell"'), "a", "expected 'lattice' \\+ 'frac_coords' or"),
        (GOOD.replace('{"gap"', '[{"gap"').replace('"x"}', '"x"}]'), "a", "properties: expected"),
    ],
)
def test_jsonl_rejections(line: str, reject_id: str | None, match: str) -> None:
    (r,) = parse_raw(RawItem(None, "f.jsonl:line 1", "jsonl", line.encode()))
    assert isinstance(r, Reject) and r.source == "f.jsonl:line 1"
    assert r.id == (reject_id or "f.jsonl:line 1")
    with pytest.raises(ValueError, match=match):
        raise ValueError(r.reason)


def test_jsonl_properties_and_empty_molecule() -> None:
    s = only(parse_raw(RawItem(None, "f", "jsonl", GOOD)))
    assert s.properties["gap"] == 1.0 and s.properties["ok"] == 1.0 and "t" not in s.properties
    assert math.isnan(s.properties["none"])
    line = '{"id":"m","species":[],"positions":[]}'
    (r,) = parse_raw(RawItem(None, "f", "jsonl", line))
    assert "positions: expected shape (N, 3) with N >= 1" in r.reason


# ---------------------------------------------------------------- containers, ids, duplicates


def test_tar_streams_members_in_order(tmp_path: Path) -> None:
    items = list(iter_raw([DATA / "archive.tar.gz"]))
    archive = str(DATA / "archive.tar.gz")
    assert [i.source for i in items] == [
        f"{archive}:cifs/mp-1000.cif",
        f"{archive}:cifs/mp-877.cif",
        f"{archive}:Si/POSCAR",
    ]
    assert [i.id for i in items] == ["mp-1000", "mp-877", "Si_POSCAR"]
    assert not any(tmp_path.iterdir()) and not (Path.cwd() / "cifs").exists()
    records = read_structures([DATA / "archive.tar.gz"])
    assert [r.n_atoms for r in records] == [2, 6, 2]


def test_tar_with_jsonl_member(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tgz"
    payload = (DATA / "sample.jsonl.gz").read_bytes()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("data/sample.jsonl.gz")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    records = read_structures([path])
    assert len(records) == 13 and records[0].source == f"{path}:data/sample.jsonl.gz:line 1"


def test_directory_sorted_recursive_and_duplicates_rejected() -> None:
    records = list(iter_structures([DATA]))
    sources = [r.source.split(str(DATA) + "/")[-1] for r in records]
    assert sources[:3] == ["GaAs_cart.vasp", "Si/POSCAR", "archive.tar.gz:cifs/mp-1000.cif"]
    dups = {
        r.source.split("/")[-1]: r.reason
        for r in records
        if "duplicate" in getattr(r, "reason", "")
    }
    assert dups["mp-1000.cif"] == (
        f"duplicate id 'mp-1000', first seen in {DATA}/archive.tar.gz:cifs/mp-1000.cif"
    )
    assert "sample.jsonl.gz:line 1" in dups and "POSCAR" in dups
    assert len(records) == 13 + 15  # every input either a structure or a rejection


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b/mp-1.cif", "mp-1"),
        ("Si/POSCAR", "Si_POSCAR"),
        ("CONTCAR", "CONTCAR"),
        ("x/CONTCAR", "x_CONTCAR"),
        ("run/POSCAR.vasp", "POSCAR"),
        ("Ge.poscar", "Ge"),
    ],
)
def test_file_ids(name: str, expected: str) -> None:
    assert file_id(name) == expected


def test_duplicate_ids_filter() -> None:
    seen = DuplicateIds()
    assert seen.check("a", "one") is None and seen.check("a", "one") is None
    r = seen.check("a", "two")
    assert r == Reject("a", "two", "duplicate id 'a', first seen in one")
    assert "a" in seen and len(seen) == 1


def test_objects_ids_and_order() -> None:
    from ase.build import bulk, molecule
    from pymatgen.core import Lattice, Molecule
    from pymatgen.core import Structure as PmgStructure

    pmg = PmgStructure(
        Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], properties={"id": "nacl"}
    )
    mol = Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])
    atoms = bulk("Cu")
    atoms.info["id"] = "cu"
    ours = make_structure("mine", np.eye(3) * 3, [[0, 0, 0]], [3])
    records = read_structures([pmg, mol, atoms, molecule("H2O"), ours])
    assert [r.id for r in records] == ["nacl", "object-1", "cu", "object-3", "mine"]
    assert records[1].source == "<input 1>" and records[1].pbc == (False,) * 3
    with pytest.raises(TypeError, match=r"inputs\[0\]: expected a path, pymatgen"):
        list(iter_raw([42]))
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        list(iter_raw([DATA / "missing.cif"]))


def test_a_directory_without_structure_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no structure files in directory .*empty "
                                                r"\(0 other files"):
        list(iter_raw([tmp_path / "empty"]))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not a structure")
    (notes / ".hidden.cif").write_text("data_x")
    with pytest.raises(FileNotFoundError, match=r"notes \(2 other files; read: \*\.cif"):
        list(iter_raw([notes]))
    (notes / "sub").mkdir()
    (notes / "sub" / "a.cif").write_text("data_a")
    assert [item.id for item in iter_raw([notes])] == ["a"]


def test_bad_paths_fail_before_any_output_is_written(tmp_path: Path) -> None:
    from fastgap.featurize import featurize
    from fastgap.screening import predict_to_file

    (tmp_path / "empty").mkdir()
    for bad, match in ((tmp_path / "missing.cif", "no such file or directory"),
                       (tmp_path / "empty", "no structure files in directory")):
        with pytest.raises(FileNotFoundError, match=match):
            check_paths([bad])
        with pytest.raises(FileNotFoundError, match=match):
            featurize([DATA / "mp-1000.cif", bad], tmp_path / "store")
        assert not (tmp_path / "store").exists()
        with pytest.raises(FileNotFoundError, match=match):
            predict_to_file([bad], tmp_path / "p.csv")
        assert not list(tmp_path.glob("p.*"))
    check_paths([DATA / "mp-1000.cif", DATA])  # a file and a directory with files: fine


def test_object_disorder_policy() -> None:
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    obj = PmgStructure(Lattice.cubic(3.0), [{"Fe": 0.7, "Co": 0.3}], [[0, 0, 0]])
    assert "partially occupied" in reject_of(obj).reason
    s = only(read_structures([obj], ReadPolicy(disorder="majority")))
    assert s.numbers.tolist() == [26]


def test_unknown_file_type_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    r = reject_of(path)
    assert r.id == "notes" and r.reason.startswith("file: unrecognised type")
    (r2,) = parse_raw(RawItem("z", "z", "zip", b"x"))
    assert "format: expected jsonl" in r2.reason


def test_raw_items_pickle_and_parse_alike() -> None:
    for item in iter_raw([DATA / "archive.tar.gz", DATA / "sample.jsonl.gz"]):
        clone = pickle.loads(pickle.dumps(item))
        a, b = parse_raw(item)[0], parse_raw(clone)[0]
        assert a.id == b.id
        np.testing.assert_array_equal(a.frac_coords, b.frac_coords)


def test_read_structures_raises_on_first_reject() -> None:
    with pytest.raises(ValueError, match=r"disordered.cif: disorder: site 'Fe1'"):
        read_structures([DATA / "mp-1000.cif", DATA / "disordered.cif"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"disorder": "drop"}, "disorder: expected one of"),
        ({"cif_engine": "ase"}, "cif_engine: expected one of"),
        ({"molecule_padding": -1.0}, "molecule_padding: expected a positive"),
    ],
)
def test_read_policy_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReadPolicy(**kwargs)


def test_molecule_padding_policy() -> None:
    line = '{"id":"h","species":["H"],"positions":[[1,2,3]]}'
    s = only(parse_raw(RawItem(None, "f", "jsonl", line), ReadPolicy(molecule_padding=2.5)))
    np.testing.assert_allclose(s.lattice, np.eye(3) * 5.0, rtol=0, atol=1e-12)
