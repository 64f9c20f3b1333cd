"""AFLOW acquisition, replayed from hand-recorded AFLUX answers in tests/data/aflow/."""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import http.server
import importlib.util
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fastgap.aflow_source import (
    DEFAULT_ENDPOINT,
    LEGACY_ENDPOINT,
    SELECT_KEYWORDS,
    AflowConfig,
    AflowError,
    build_query,
    fetch_aflow,
    lattice_from_geometry,
    parse_page,
    record_from_entry,
    urllib_fetch,
)

DATA = Path(__file__).parent / "data" / "aflow"
AMU_A3_TO_G_CM3 = 1.66053906660
PAGING = re.compile(r"paging\((\d+),(\d+)\)")

DICT_PAGES = {(1, 4): "icsd_gap_dict_page1.json", (2, 4): "icsd_gap_dict_page2.json"}
LIST_PAGES = {(1, 5): "icsd_list_page1.json"}
LEGACY_PAGES = {(1, 3): "legacy_strings_page1.json"}


class Replay:
    """``fetch(url) -> bytes`` serving recorded pages by their ``paging(n,k)``; keeps the URLs."""

    def __init__(self, pages: dict[tuple[int, int], str]) -> None:
        self.pages = pages
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        n, k = map(int, PAGING.search(url).groups())
        name = self.pages.get((n, k))
        return b"[]" if name is None else (DATA / name).read_bytes()


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_rejects(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def recorded_entries(name: str) -> list[dict]:
    entries, _ = parse_page((DATA / name).read_bytes())
    return entries


# --- the query ------------------------------------------------------------------------------


def test_query_url_has_catalog_functional_density_gap_and_paging() -> None:
    url = build_query(AflowConfig(nonzero_gap=True, page_size=4), page=2)
    assert url.startswith(DEFAULT_ENDPOINT + "?")
    query = url.split("?", 1)[1]
    assert query.endswith(",catalog(ICSD),paging(2,4),format(json)")
    terms = query.removesuffix(",paging(2,4),format(json)").split(",")
    assert terms[:3] == ["Egap(!*0)", "density(!*0.5)", "dft_type('PAW_PBE')"]  # Egap > 0 eV
    assert terms[3:-1] == list(SELECT_KEYWORDS)


def test_query_without_gap_filter_selects_egap_plainly() -> None:
    url = build_query(AflowConfig(min_density=1.25, catalog="LIB2"), page=1)
    matchbook = url.split("?", 1)[1].split(",")
    assert "Egap" in matchbook and not any(m.startswith("Egap(") for m in matchbook)
    assert "density(!*1.25)" in matchbook and "catalog(LIB2)" in matchbook


@pytest.mark.parametrize("endpoint", [LEGACY_ENDPOINT, LEGACY_ENDPOINT + "?"])
def test_query_on_legacy_endpoint(endpoint: str) -> None:
    url = build_query(AflowConfig(endpoint=endpoint), page=1)
    assert url.startswith("http://aflowlib.duke.edu/search/API/?Egap,")


def test_consecutive_queries_do_not_leak_keyword_state() -> None:
    import aflow.keywords as kw

    first = build_query(AflowConfig(nonzero_gap=True, min_density=3.0), page=1)
    second = build_query(AflowConfig(), page=1)
    assert "Egap(!*0)" in first and "density(!*3.0)" in first
    assert "Egap(" not in second and "density(!*0.5)" in second and "*3.0" not in second
    assert kw.Egap.cache == [] and kw.Egap.state == []
    assert kw.density.cache == [] and kw.dft_type.cache == []
    # state left behind by other code using the package must not reach our query either
    _ = kw.Egap <= 7
    _ = kw.species == "Fe"
    third = build_query(AflowConfig(), page=1)
    assert third == second
    assert kw.Egap.cache == [] and kw.species.cache == []


def test_page_must_be_positive() -> None:
    with pytest.raises(ValueError, match="page: expected an int >= 1"):
        build_query(AflowConfig(), page=0)


# --- response shapes ------------------------------------------------------------------------


def test_parse_dict_shape_orders_by_index_and_reports_total() -> None:
    raw = json.dumps({"2 of 9": {"auid": "b"}, "1 of 9": {"auid": "a"}}).encode()
    entries, total = parse_page(raw)
    assert [e["auid"] for e in entries] == ["a", "b"] and total == 9


def test_parse_list_shape_and_empty_answers() -> None:
    assert parse_page(b'[{"auid": "a"}]') == ([{"auid": "a"}], None)
    assert parse_page(b"[]") == ([], None)
    assert parse_page(b"{}") == ([], None)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b'{"error": "unknown keyword Egapp"}', "expected keys like '1 of N'"),
        (b"42", "expected a dict or a list"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_parse_rejects_answers_that_are_not_pages(raw: bytes, match: str) -> None:
    with pytest.raises(AflowError, match=match):
        parse_page(raw, "http://x/")


# --- replayed runs --------------------------------------------------------------------------


def test_dict_shape_pages_are_followed_and_rebuilt(tmp_path: Path) -> None:
    replay = Replay(DICT_PAGES)
    config = AflowConfig(out=tmp_path / "aflow.jsonl.gz", nonzero_gap=True, page_size=4)
    summary = fetch_aflow(config, fetch=replay)
    assert [PAGING.search(u).groups() for u in replay.urls] == [("1", "4"), ("2", "4")]
    assert (summary.written, summary.rejected, summary.pages) == (6, 1, 2)
    assert summary.reported_total == 7
    records = read_jsonl(config.out)
    assert [r["id"] for r in records] == [
        "aflow:fc70fda6652015cb", "aflow:7b5c2a8e1d4f9036", "aflow:c4a08f6e3b2d7195",
        "aflow:58d3e1f0a9c6b247", "aflow:9f17b4c2e8a05d36", "aflow:2e91c0b7a5d84f13",
    ]
    rejects = read_rejects(tmp_path / "aflow.rejects.csv")
    assert rejects == [{
        "id": "aflow:3e8b1f7c0a2d6954",
        "source": "aflux page 2 entry 2",
        "reason": "composition [2, 2] sums to 4 atoms but positions_fractional has 3",
    }]
    assert "6 structures written" in str(summary) and "1 rejected" in str(summary)


def test_rebuilt_cells_match_recorded_volume_and_density(tmp_path: Path) -> None:
    from ase.data import atomic_masses, atomic_numbers

    config = AflowConfig(out=tmp_path / "a.jsonl", nonzero_gap=True, page_size=4)
    fetch_aflow(config, fetch=Replay(DICT_PAGES))
    raw = {e["auid"]: e for name in DICT_PAGES.values() for e in recorded_entries(name)}
    records = read_jsonl(config.out)
    for rec in records:
        entry = raw[rec["id"]]
        lattice = np.array(rec["lattice"])
        volume = abs(np.linalg.det(lattice))
        np.testing.assert_allclose(volume, entry["volume_cell"], rtol=1e-5)
        mass = sum(atomic_masses[atomic_numbers[s]] for s in rec["species"])
        np.testing.assert_allclose(mass * AMU_A3_TO_G_CM3 / volume, entry["density"], rtol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(lattice, axis=1), entry["geometry"][:3],
                                   rtol=1e-12)
        assert rec["frac_coords"] == entry["positions_fractional"]
        assert rec["properties"] == {"band_gap_eV": entry["Egap"],
                                     "density_g_cm3": entry["density"]}
        assert rec["meta"] == {"aurl": entry["aurl"], "compound": entry["compound"],
                               "catalog": "ICSD"}
    by_id = {r["id"]: r for r in records}
    assert by_id["aflow:fc70fda6652015cb"]["species"] == ["Ac"] * 2 + ["Br"] * 6
    assert by_id["aflow:58d3e1f0a9c6b247"]["species"] == ["O"] * 4 + ["Ti"] * 2


def test_list_shape_short_page_ends_the_query(tmp_path: Path) -> None:
    replay = Replay(LIST_PAGES)
    config = AflowConfig(out=tmp_path / "list.jsonl", page_size=5)
    summary = fetch_aflow(config, fetch=replay)
    assert len(replay.urls) == 1 and summary.reported_total is None
    assert (summary.written, summary.rejected) == (3, 1)
    records = read_jsonl(config.out)
    assert [r["properties"]["band_gap_eV"] for r in records] == [0.6117, 0, 4.4452]  # Cu kept
    (reject,) = read_rejects(tmp_path / "list.rejects.csv")
    assert reject["id"] == "aflow:6c2f9e0b7d3a1548"
    assert reject["reason"].startswith("volume_cell: rebuilt cell gives 65.7")


def test_nonzero_gap_rejects_a_metal_that_slips_through(tmp_path: Path) -> None:
    config = AflowConfig(out=tmp_path / "gap.jsonl", page_size=5, nonzero_gap=True)
    summary = fetch_aflow(config, fetch=Replay(LIST_PAGES))
    assert (summary.written, summary.rejected) == (2, 2)
    reasons = {r["id"]: r["reason"] for r in read_rejects(tmp_path / "gap.rejects.csv")}
    assert reasons["aflow:a1c7e5d3f2b04968"] == "Egap: expected > 0 eV, got 0.0"


def test_legacy_string_values_are_parsed(tmp_path: Path) -> None:
    config = AflowConfig(out=tmp_path / "old.jsonl.gz", endpoint=LEGACY_ENDPOINT, page_size=3)
    replay = Replay(LEGACY_PAGES)
    summary = fetch_aflow(config, fetch=replay)
    assert replay.urls[0].startswith(LEGACY_ENDPOINT + "?")
    assert (summary.written, summary.rejected, summary.reported_total) == (2, 1, 3)
    nacl, zno = read_jsonl(config.out)
    assert nacl["species"] == ["Cl", "Na"] and nacl["frac_coords"] == [[0.5] * 3, [0.0] * 3]
    assert zno["species"] == ["O", "O", "Zn", "Zn"] and zno["properties"]["band_gap_eV"] == 0.7322
    (reject,) = read_rejects(tmp_path / "old.rejects.csv")
    assert reject["reason"] == "missing positions_fractional"


def test_limit_stops_reading_and_requesting(tmp_path: Path) -> None:
    replay = Replay(DICT_PAGES)
    config = AflowConfig(out=tmp_path / "l.jsonl", page_size=4, limit=4, nonzero_gap=True)
    summary = fetch_aflow(config, fetch=replay)
    assert len(replay.urls) == 1 and summary.written == 4
    replay = Replay({(1, 2): "icsd_gap_dict_page1.json"})
    config = AflowConfig(out=tmp_path / "m.jsonl", page_size=4, limit=2, overwrite=True)
    summary = fetch_aflow(config, fetch=replay)
    assert "paging(1,2)" in replay.urls[0] and summary.written == 2


def test_output_reads_back_with_fastgap_readers(tmp_path: Path) -> None:
    if importlib.util.find_spec("fastgap.readers") is None:
        pytest.skip("fastgap.readers is not there yet")
    from fastgap.readers import read_structures

    config = AflowConfig(out=tmp_path / "aflow.jsonl", nonzero_gap=True, page_size=4)
    fetch_aflow(config, fetch=Replay(DICT_PAGES))
    structures = read_structures([config.out])
    records = read_jsonl(config.out)
    assert [s.id for s in structures] == [r["id"] for r in records]
    for s, r in zip(structures, records):
        np.testing.assert_allclose(s.lattice, r["lattice"], rtol=0, atol=1e-12)
        assert s.properties["band_gap_eV"] == r["properties"]["band_gap_eV"]
        assert s.n_atoms == len(r["species"])


def test_existing_outputs_are_not_overwritten(tmp_path: Path) -> None:
    config = AflowConfig(out=tmp_path / "x.jsonl", page_size=5)
    fetch_aflow(config, fetch=Replay(LIST_PAGES))
    with pytest.raises(FileExistsError, match="exists"):
        fetch_aflow(config, fetch=Replay(LIST_PAGES))
    again = AflowConfig(out=tmp_path / "x.jsonl", page_size=5, overwrite=True)
    assert fetch_aflow(again, fetch=Replay(LIST_PAGES)).written == 3
