"""Bulk parsing (`parse_batch`, `iter_raw_chunks`) equals the per-record readers, record for record."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from fastgap.readers import RawItem, iter_raw, iter_raw_chunks, parse_batch, parse_raw
from fastgap.structure_batch import StructureBatch, batch_suspects
from fastgap.structures import Reject

DATA = Path(__file__).parent / "data"
MP12 = DATA / "featurize" / "mp12.jsonl"
READERS = DATA / "readers"


def _jsonl_variants() -> list[bytes]:
    """Good MP records plus every way a record can be wrong or unusual."""
    good = [json.loads(line) for line in MP12.read_text().splitlines()[:4]]
    base = good[0]
    bad = [
        b"{not json",
        b"[1, 2]",
        {**base, "id": ""},
        {**base, "id": 7},
        {**base, "species": "NaCl"},
        {**base, "species": []},
        {**base, "species": ["Xx"] * len(base["species"])},
        {**base, "frac_coords": base["frac_coords"][:-1]},
        {**base, "frac_coords": [[0.0, 0.0]] * len(base["species"])},
        {**base, "lattice": [[1, 0, 0], [0, 1, 0]]},
        {**base, "lattice": [[1, 0, 0], [2, 0, 0], [0, 0, 1]]},  # singular
        {**base, "lattice": [[float("nan"), 0, 0], [0, 1, 0], [0, 0, 1]]},
        {**base, "frac_coords": [[0.1, 0.2, 0.3]] * len(base["species"])},  # same position
        {**base, "frac_coords": [[0, 0, 0], [1.0, 0, 0]] + base["frac_coords"][2:]},  # wrapped
        {**base, "properties": [1, 2]},
        {**base, "properties": {"a": 1, "b": None, "c": "x", "d": True, "e": [1]}},
        {"id": "mol", "species": ["O", "H", "H"],
         "positions": [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]},
        {**base, "id": "strings", "frac_coords": [[str(x) for x in r] for r in base["frac_coords"]]},
        {"id": "nolattice", "species": ["Na"]},
    ]
    out = []
    for rec in [*good[:2], *bad, *good[2:]]:
        out.append(rec if isinstance(rec, bytes) else json.dumps(rec).encode())
    return out


def _as_records(items: list[RawItem]) -> list[tuple[str, str, str, str]]:
    out = []
    for item in items:
        for r in parse_raw(item):
            if isinstance(r, Reject):
                out.append(("reject", r.id, r.source, r.reason))
            else:
                out.append(("ok", r.id, r.source, ""))
    return out


def _reference(items: list[RawItem]) -> StructureBatch:
    good = [r for item in items for r in parse_raw(item) if not isinstance(r, Reject)]
    return StructureBatch.from_structures(good)


def _assert_same(got: StructureBatch, want: StructureBatch) -> None:
    assert got.ids == want.ids and got.sources == want.sources
    for name in ("lattices", "frac_coords", "numbers", "atom_ptr", "pbc"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    def props(b: StructureBatch) -> list[list[tuple[str, str]]]:
        return [sorted((k, repr(v)) for k, v in p.items()) for p in b.properties]  # NaN == NaN

    assert props(got) == props(want)


def _items(tmp_path: Path) -> list[RawItem]:
    lines = _jsonl_variants()
    path = tmp_path / "mixed.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines[:10]) + b"\n\n" + b"\n".join(lines[10:]))  # a blank line
    cifs = sorted(READERS.glob("*.cif"))
    inline = [RawItem(None, f"<line {i}>", "jsonl", line) for i, line in enumerate(lines[:3])]
    return [*iter_raw([path, *cifs, READERS / "GaAs_cart.vasp"]), *inline]


def test_parse_batch_equals_parse_raw(tmp_path: Path) -> None:
    items = [i for i in _items(tmp_path) if i.format != "unknown"]
    got = parse_batch(items)
    assert got.records == _as_records(items)
    assert any(kind == "reject" for kind, *_ in got.records)
    _assert_same(got.batch, _reference(items))


@pytest.mark.parametrize("variant", range(len(_jsonl_variants())))
def test_each_jsonl_variant_between_good_records(
    variant: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One unusual record among good ones: the good ones stay on the vectorised path."""
    import fastgap.readers

    lines = _jsonl_variants()
    good = [lines[0], lines[1], lines[-1]]
    items = [RawItem(None, f"<line {i}>", "jsonl", line)
             for i, line in enumerate([good[0], lines[variant], *good[1:]])]  # fmt: skip
    want_records, want = _as_records(items), _reference(items)
    calls: list[str] = []
    real = fastgap.readers.parse_raw

    def counting(item: RawItem, policy: object = None) -> list:
        calls.append(item.source)
        return real(item, policy)  # type: ignore[arg-type]

    monkeypatch.setattr(fastgap.readers, "parse_raw", counting)
    got = parse_batch(items)
    assert got.records == want_records
    _assert_same(got.batch, want)
    assert set(calls) <= {"<line 1>"}  # only the variant may need the per-record reader


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_chunks_and_blocks_equal_iter_raw(tmp_path: Path, size: int) -> None:
    items = _items(tmp_path)
    chunks = list(iter_raw_chunks([tmp_path / "mixed.jsonl.gz", *sorted(READERS.glob("*.cif"))],
                                  size))  # fmt: skip
    assert any(i.format == "jsonl-block" for c in chunks for i in c)
    assert all(len(c) <= size for c in chunks if all(i.format == "cif" for i in c))
    flat = [r for c in chunks for item in c for r in parse_raw(item)]
    n = len(flat)
    want = [r for item in items[:n] for r in parse_raw(item)]
    assert [(type(r), r.id, r.source) for r in flat] == [(type(r), r.id, r.source) for r in want]
    got = [rec for c in chunks for rec in parse_batch(c).records]
    assert got == _as_records(items)[: len(got)]


def test_line_blocks_keep_line_numbers_without_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    lines = [line.encode() for line in MP12.read_text().splitlines()[:5]]
    path.write_bytes(lines[0] + b"\n\n" + b"\n".join(lines[1:]))  # no newline at the end
    sources = [i.source for c in iter_raw_chunks([path], 2) for i in c for _ in [0]]
    assert sources == [str(path)] * 3
    want = [i.source for i in iter_raw([path])]
    got = [r[2] for c in iter_raw_chunks([path], 2) for r in parse_batch(c).records]
    assert got == want == [f"{path}:line {n}" for n in (1, 3, 4, 5, 6)]


def test_iter_raw_chunks_validates_size() -> None:
    with pytest.raises(ValueError, match="size: expected an int >= 1"):
        next(iter_raw_chunks([MP12], 0))


def test_batch_suspects_flags_what_validate_rejects() -> None:
    lat = np.stack([np.eye(3) * 4.0] * 4)  # (4, 3, 3)
    lat[1, 2] = lat[1, 0]  # singular
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0, 0, 0], [0.1, 0.2, 0.3], [1.1, 0.2, 0.3],
                     [0.2, 0.2, 0.2], [np.inf, 0, 0]])  # fmt: skip
    ptr = np.array([0, 2, 3, 5, 7])
    got = batch_suspects(lat, frac, ptr, np.ones((4, 3), dtype=bool))
    assert got.tolist() == [False, True, True, True]
    # the same wrapped duplicate along a non-periodic axis is two distinct atoms
    open_c = np.array([[True, True, True], [True] * 3, [False, True, True], [True] * 3])
    assert batch_suspects(lat, frac, ptr, open_c).tolist() == [False, True, False, True]


def test_structure_batch_select_and_concat() -> None:
    items = list(itertools.islice(iter_raw([MP12]), 5))
    batch = parse_batch(items).batch
    again = StructureBatch.concat([batch.select([3, 4]), batch.select([0, 1, 2])])
    _assert_same(again.select([2, 3, 4, 0, 1]), batch)
    with pytest.raises(ValueError, match="batches: expected at least one"):
        StructureBatch.concat([])
