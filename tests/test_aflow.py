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
from typing import ClassVar

import numpy as np
import pytest

from fastgap.aflow_records import lattice_from_geometry, record_from_entry
from fastgap.aflow_source import (
    DEFAULT_ENDPOINT,
    LEGACY_ENDPOINT,
    SELECT_KEYWORDS,
    AflowConfig,
    AflowError,
    build_query,
    fetch_aflow,
    parse_page,
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


# --- the network boundary (local sockets only) ----------------------------------------------


def test_closed_port_is_a_clear_error_without_retries() -> None:
    fetch = urllib_fetch(timeout_s=2.0, retries=5, retry_wait_s=30.0)  # refused: no retry
    with pytest.raises(AflowError, match=r"after 1 attempt\(s\) \(timeout 2.0 s\).*refused"):
        fetch("http://127.0.0.1:9/?Egap")


def test_unreachable_endpoint_run_fails_and_leaves_no_outputs(tmp_path: Path) -> None:
    config = AflowConfig(out=tmp_path / "a.jsonl.gz", endpoint="http://127.0.0.1:9/",
                         timeout_s=2.0, retries=0)
    with pytest.raises(AflowError, match=r"AFLUX request failed.*0 written, 0 rejected"):
        fetch_aflow(config)
    assert list(tmp_path.iterdir()) == []


def test_silent_server_times_out_and_retries_a_bounded_number_of_times() -> None:
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        fetch = urllib_fetch(timeout_s=0.2, retries=1, retry_wait_s=0.0)
        with pytest.raises(AflowError, match=r"after 2 attempt\(s\) \(timeout 0.2 s\)"):
            fetch(f"http://127.0.0.1:{port}/?Egap")


class _AfluxHandler(http.server.BaseHTTPRequestHandler):
    """Answers AFLUX-like GETs from the recorded list page; ``/fail`` answers HTTP 503."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path.startswith("/fail"):
            self.send_error(503, "Service Unavailable")
            return
        body = (DATA / "icsd_list_page1.json").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def aflux_server() -> Iterator[str]:
    _AfluxHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AfluxHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_urllib_path_against_a_local_server(tmp_path: Path, aflux_server: str) -> None:
    config = AflowConfig(out=tmp_path / "a.jsonl.gz", endpoint=aflux_server + "/API/aflux/",
                         page_size=5)
    summary = fetch_aflow(config)
    assert (summary.written, summary.rejected, summary.pages) == (3, 1, 1)
    (path,) = _AfluxHandler.requests
    assert path.startswith("/API/aflux/?Egap,density(!*0.5),dft_type(")
    assert path.endswith(",catalog(ICSD),paging(1,5),format(json)")


def test_http_5xx_is_retried_then_reported(aflux_server: str) -> None:
    fetch = urllib_fetch(timeout_s=2.0, retries=2, retry_wait_s=0.0)
    with pytest.raises(AflowError, match=r"after 3 attempt\(s\).*HTTP 503"):
        fetch(aflux_server + "/fail?Egap")
    assert len(_AfluxHandler.requests) == 3


def test_a_failure_after_some_pages_keeps_what_was_written(tmp_path: Path) -> None:
    def fetch(url: str) -> bytes:
        if "paging(1,4)" in url:
            return (DATA / "icsd_gap_dict_page1.json").read_bytes()
        raise AflowError("AFLUX request failed: HTTP 502")

    config = AflowConfig(out=tmp_path / "p.jsonl", page_size=4)
    with pytest.raises(AflowError, match=r"HTTP 502 \(4 written, 0 rejected before the failure"):
        fetch_aflow(config, fetch=fetch)
    assert len(read_jsonl(config.out)) == 4


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"endpoint": "aflow.org/API/aflux/"}, ValueError, "endpoint: expected an http"),
        ({"endpoint": 3}, ValueError, "endpoint: expected an http"),
        ({"catalog": "ICSD)"}, ValueError, "catalog: expected a word"),
        ({"dft_type": ""}, ValueError, "dft_type: expected a word"),
        ({"page_size": 0}, ValueError, "page_size: expected an int >= 1, got 0"),
        ({"page_size": 2.5}, TypeError, "page_size: expected an int, got float"),
        ({"page_size": True}, TypeError, "page_size: expected an int, got bool"),
        ({"limit": 0}, ValueError, "limit: expected an int >= 1"),
        ({"retries": -1}, ValueError, "retries: expected an int >= 0"),
        ({"timeout_s": 0}, ValueError, "timeout_s: expected a finite number"),
        ({"timeout_s": "10"}, TypeError, "timeout_s: expected a number, got str"),
        ({"min_density": float("nan")}, ValueError, "min_density: expected a finite number"),
        ({"check_rtol": -0.1}, ValueError, "check_rtol: expected a finite number"),
    ],
)
def test_config_validation(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        AflowConfig(**kwargs)


def test_config_defaults_and_rejects_path(tmp_path: Path) -> None:
    config = AflowConfig()
    assert config.endpoint == "https://aflow.org/API/aflux/" and config.timeout_s == 10.0
    assert AflowConfig(out=tmp_path / "x.jsonl.gz").rejects_path == tmp_path / "x.rejects.csv"
    assert AflowConfig(rejects=tmp_path / "r.csv").rejects_path == tmp_path / "r.csv"


# --- one entry ------------------------------------------------------------------------------


def test_lattice_from_geometry_matches_cell_lengths_and_angles() -> None:
    geometry = np.array([4.1, 5.2, 6.3, 81.0, 97.0, 112.0])
    lattice = lattice_from_geometry(geometry)
    a, b, c = lattice
    np.testing.assert_allclose(np.linalg.norm(lattice, axis=1), geometry[:3], rtol=1e-14)
    cos = [b @ c / (geometry[1] * geometry[2]), a @ c / (geometry[0] * geometry[2]),
           a @ b / (geometry[0] * geometry[1])]
    np.testing.assert_allclose(np.degrees(np.arccos(cos)), geometry[3:], rtol=1e-12)


@pytest.mark.parametrize(
    ("geometry", "match"),
    [
        ([0.0, 1, 1, 90, 90, 90], "expected positive a, b, c"),
        ([1, 1, 1, 90, 90, 180], "gamma 180.0 degrees does not make a cell"),
        ([1, 1, 1, 30, 30, 90], "do not make a cell"),
    ],
)
def test_lattice_from_geometry_errors(geometry: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lattice_from_geometry(np.array(geometry, dtype=float))


def _good_entry() -> dict:
    return copy.deepcopy(recorded_entries("icsd_gap_dict_page1.json")[0])  # Ac2Br6


def test_stoichiometry_is_used_when_composition_is_missing() -> None:
    entry = _good_entry()
    del entry["composition"]
    record = record_from_entry(entry, AflowConfig(), set())
    assert record["species"] == ["Ac"] * 2 + ["Br"] * 6


def _mutate(entry: dict, key: str, value: object) -> dict:
    if value is None:
        del entry[key]
    else:
        entry[key] = value
    return entry


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("auid", None, "missing auid"),
        ("auid", 17, "auid: expected a new string id"),
        ("species", ["Ac", "Xx"], r"species: unknown element\(s\) \['Xx'\]"),
        ("species", [1, 2], "species: expected a list of strings"),
        ("composition", [2, 5], "sums to 7 atoms but positions_fractional has 8"),
        ("composition", [2, 3, 3], "composition: expected 2 counts"),
        ("composition", [1.5, 6.5], "expected positive whole atom counts"),
        ("positions_fractional", [[0, 0], [0, 1]], "expected N rows of 3 numbers"),
        ("positions_fractional", "0,0,a", "positions_fractional: expected numbers"),
        ("geometry", [8.2, 8.2, 4.7, 90, 90], r"geometry: expected \[a, b, c"),
        ("geometry", [8.2, 8.2, float("nan"), 90, 90, 120], "geometry: non-finite"),
        ("volume_cell", 300.0, "volume_cell: rebuilt cell gives 278.353"),
        ("density", 6.2, "density: rebuilt cell gives 5.5687"),
        ("Egap", None, "missing Egap"),
        ("Egap", -0.1, "Egap: expected >= 0 eV, got -0.1"),
    ],
)
def test_entry_reject_reasons(key: str, value: object, match: str) -> None:
    entry = _mutate(_good_entry(), key, value)
    with pytest.raises(ValueError, match=match):
        record_from_entry(entry, AflowConfig(), set())


def test_entry_type_and_duplicate_ids() -> None:
    with pytest.raises(TypeError, match="entry: expected a JSON object, got list"):
        record_from_entry([1, 2], AflowConfig(), set())
    entry = _good_entry()
    with pytest.raises(ValueError, match="duplicate"):
        record_from_entry(entry, AflowConfig(), {entry["auid"]})


def test_stoichiometry_without_composition_must_give_whole_counts() -> None:
    entry = _mutate(_good_entry(), "composition", None)
    entry["stoichiometry"] = [0.3, 0.7]
    with pytest.raises(ValueError, match="stoichiometry: expected positive whole atom counts"):
        record_from_entry(entry, AflowConfig(), set())


# --- command line ---------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from fastgap.cli import aflow as cli

    parser = argparse.ArgumentParser(prog="fastgap aflow")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_cli_prints_the_summary(tmp_path: Path, aflux_server: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "aflow.jsonl.gz"
    code = _cli(["--out", str(out), "--endpoint", aflux_server + "/", "--page-size", "5",
                 "--limit", "3"])
    assert code == 0
    assert "2 structures written" in capsys.readouterr().out  # + 1 rejected = limit
    assert "paging(1,3)" in _AfluxHandler.requests[0]
    assert len(read_jsonl(out)) == 2 and len(read_rejects(tmp_path / "aflow.rejects.csv")) == 1


def test_cli_unreachable_endpoint_exits_with_a_message(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli(["--out", str(tmp_path / "a.jsonl"), "--endpoint", "http://127.0.0.1:9/",
                 "--timeout", "2", "--retries", "0"])
    assert code == 3
    assert "fastgap aflow: error: AFLUX request failed" in capsys.readouterr().err


def test_cli_bad_argument_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="page_size: expected an int >= 1"):
        _cli(["--out", str(tmp_path / "a.jsonl"), "--page-size", "0"])
