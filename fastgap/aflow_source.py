"""AFLOW acquisition: query AFLUX for PBE band gaps of ICSD structures, write JSON-lines.

The query grammar comes from the ``aflow`` package's keyword objects (``Egap > 0`` becomes
``Egap(!*0)``); the request string, paging, HTTP and response parsing are done here, because
the package hard-codes a stale server address, has no timeout and keeps module-level keyword
state between queries (``aflow.keywords.reset`` clears it; it is called around every build).

A request is ``<endpoint>?<matchbook>,<directives>``, for example::

    https://aflow.org/API/aflux/?Egap(!*0),density(!*0.5),dft_type('PAW_PBE'),geometry,...,
    catalog(ICSD),paging(1,100),format(json)

The service answers either a dict keyed ``"i of N"`` (i counts from 1 over the whole query)
or a plain list of entries; both are accepted. Each entry becomes one JSON-lines record (see
`fastgap.aflow_records.record_from_entry`) or one row of the rejects CSV (``id,source,reason``).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fastgap.aflow_records import record_from_entry

DEFAULT_ENDPOINT = "https://aflow.org/API/aflux/"
LEGACY_ENDPOINT = "http://aflowlib.duke.edu/search/API/"

# AFLOW keywords returned for each entry (besides the filtered ones, which AFLUX returns too).
SELECT_KEYWORDS: tuple[str, ...] = (
    "auid", "aurl", "compound", "species", "composition", "stoichiometry", "natoms",
    "geometry", "positions_fractional", "volume_cell",
)

Fetch = Callable[[str], bytes]
_KEY_RE = re.compile(r"^\s*(\d+)\s+of\s+(\d+)\s*$")


class AflowError(RuntimeError):
    """The AFLUX service could not be reached or answered something that is not a page."""


@dataclass
class AflowConfig:
    """What to ask AFLUX for and where to write the answer.

    Attributes:
        out: JSON-lines output path; gzipped when it ends with ``.gz``.
        rejects: CSV of entries that could not be rebuilt; default next to ``out``
            (``aflow.jsonl.gz`` -> ``aflow.rejects.csv``).
        endpoint: AFLUX base URL (http or https). ``LEGACY_ENDPOINT`` is the old address.
        catalog: AFLOW catalog (``ICSD``, ``LIB1``, ...).
        dft_type: pseudopotential/functional filter.
        min_density: keep entries with density strictly above this, g/cm3.
        nonzero_gap: also require ``Egap > 0`` (eV) on the server and on each entry.
        page_size: entries per request (AFLUX ``paging(n, page_size)``).
        limit: stop after this many entries (written + rejected); None = all.
        timeout_s: socket timeout of each request (connect and each read), seconds.
        retries: extra attempts after a timeout or HTTP 5xx; a refused connection or an
            unknown host fails at once.
        retry_wait_s: pause before each retry, seconds.
        check_rtol: relative tolerance of the cell volume against ``volume_cell`` and of the
            density from atomic masses against ``density``.
        overwrite: replace existing output files instead of refusing.
    """

    out: Path = Path("aflow.jsonl.gz")
    rejects: Path | None = None
    endpoint: str = DEFAULT_ENDPOINT
    catalog: str = "ICSD"
    dft_type: str = "PAW_PBE"
    min_density: float = 0.5
    nonzero_gap: bool = False
    page_size: int = 100
    limit: int | None = None
    timeout_s: float = 10.0
    retries: int = 2
    retry_wait_s: float = 2.0
    check_rtol: float = 0.02
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.rejects is not None:
            self.rejects = Path(self.rejects)
        if not isinstance(self.endpoint, str) or not re.match(r"^https?://\S+$", self.endpoint):
            raise ValueError(f"endpoint: expected an http(s) URL, got {self.endpoint!r}")
        for name in ("catalog", "dft_type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]+", value):
                raise ValueError(f"{name}: expected a word like 'ICSD', got {value!r}")
        _check_int("page_size", self.page_size, minimum=1)
        if self.limit is not None:
            _check_int("limit", self.limit, minimum=1)
        _check_int("retries", self.retries, minimum=0)
        for name in ("min_density", "timeout_s", "retry_wait_s", "check_rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
            if not np.isfinite(value) or value < 0 or (name == "timeout_s" and value == 0):
                raise ValueError(f"{name}: expected a finite number >= 0 (> 0 for timeout_s), "
                                 f"got {value!r}")

    @property
    def rejects_path(self) -> Path:
        if self.rejects is not None:
            return self.rejects
        stem = self.out.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        return self.out.with_name(f"{stem}.rejects.csv")


@dataclass(frozen=True)
class AflowSummary:
    """Counts of one acquisition run."""

    written: int
    rejected: int
    pages: int
    reported_total: int | None
    out: Path
    rejects: Path

    def __str__(self) -> str:
        total = "unknown" if self.reported_total is None else str(self.reported_total)
        return (f"aflow: {self.written} structures written to {self.out}, "
                f"{self.rejected} rejected ({self.rejects}); {self.pages} page(s), "
                f"service reported {total} matches")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")


def build_query(config: AflowConfig, page: int) -> str:
    """The full AFLUX request URL for 1-based ``page`` of ``config``'s query.

    The ``aflow`` keyword objects are module-level singletons whose operators record state;
    the state is cleared before and after so that no query sees another one's filters.
    """
    _check_int("page", page, minimum=1)
    import aflow.keywords as kw

    kw.reset()
    try:
        filters = [
            str(~(kw.density <= config.min_density)),  # density > min_density
            str(kw.dft_type == config.dft_type),
        ]
        filters.insert(0, str(~(kw.Egap <= 0)) if config.nonzero_gap else kw.Egap.name)
    finally:
        kw.reset()
    selects = [getattr(kw, name).name for name in SELECT_KEYWORDS]
    directives = [f"catalog({config.catalog})", f"paging({page},{config.page_size})",
                  "format(json)"]
    base = config.endpoint if config.endpoint.endswith("?") else config.endpoint + "?"
    return base + ",".join(filters + selects + directives)


def urllib_fetch(timeout_s: float = 10.0, retries: int = 2, retry_wait_s: float = 2.0) -> Fetch:
    """A ``fetch(url) -> bytes`` over ``urllib`` with a socket timeout and bounded retries.

    Raises:
        AflowError: the host is unknown or refuses, every attempt timed out, or HTTP error.
    """

    def fetch(url: str) -> bytes:
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.reason}"
                transient = exc.code >= 500
            except urllib.error.URLError as exc:
                reason = str(exc.reason)
                transient = isinstance(exc.reason, TimeoutError)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                transient = not isinstance(exc, ConnectionRefusedError)
            if not transient or attempt == retries:
                raise AflowError(f"AFLUX request failed after {attempt + 1} attempt(s) "
                                 f"(timeout {timeout_s} s): {reason}; url: {url}")
            time.sleep(retry_wait_s)
        raise AssertionError("unreachable")  # the loop always returns or raises

    return fetch


def parse_page(raw: bytes, url: str = "") -> tuple[list[Any], int | None]:
    """Entries of one AFLUX answer, in service order, and the reported total (None if the
    answer is a plain list, which does not carry it).

    Raises:
        AflowError: not JSON, an error message from the service, or an unknown shape.
    """
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        head = raw[:200].decode("utf-8", "replace")
        raise AflowError(f"AFLUX answer is not JSON ({exc}): {head!r}; url: {url}") from None
    if isinstance(payload, list):
        return payload, None
    if not isinstance(payload, dict):
        raise AflowError(f"AFLUX answer: expected a dict or a list, got "
                         f"{type(payload).__name__}; url: {url}")
    if not payload:
        return [], None
    keyed = []
    total = None
    for key, value in payload.items():
        match = _KEY_RE.match(str(key))
        if match is None:
            raise AflowError(f"AFLUX answer: expected keys like '1 of N', got {key!r} "
                             f"({str(value)[:200]!r}); url: {url}")
        keyed.append((int(match.group(1)), value))
        total = int(match.group(2))
    keyed.sort(key=lambda item: item[0])
    return [value for _, value in keyed], total


def iter_pages(config: AflowConfig, fetch: Fetch) -> Iterator[tuple[int, list[Any], int | None]]:
    """Yield ``(page, entries, reported_total)`` for pages 1, 2, ... of ``config``'s query.

    Paging stops after the reported total, a short page or an empty page; a caller that
    stops iterating (``config.limit``) stops the requests too.
    """
    page = 1
    while True:
        url = build_query(config, page)
        entries, total = parse_page(fetch(url), url)
        if entries:
            yield page, entries, total
        if (not entries or len(entries) < config.page_size
                or (total is not None and page * config.page_size >= total)):
            return
        page += 1


def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", newline="\n")
    return open(path, "w", encoding="utf-8", newline="\n")


class _Sink:
    """Writes each entry as a record or as a rejects row, and counts both."""

    def __init__(self, out: TextIO, rejects: Any, config: AflowConfig) -> None:
        self.out, self.rejects, self.config = out, rejects, config
        self.written = self.rejected = 0
        self.seen_ids: set[str] = set()

    def add(self, entry: Any, source: str) -> None:
        try:
            record = record_from_entry(entry, self.config, self.seen_ids)
        except (ValueError, TypeError) as exc:
            self.rejects.writerow([_entry_id(entry), source, str(exc)])
            self.rejected += 1
            return
        self.seen_ids.add(record["id"])
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.written += 1

    def remaining(self) -> int | None:
        limit = self.config.limit
        return None if limit is None else limit - self.written - self.rejected


def fetch_aflow(config: AflowConfig, *, fetch: Fetch | None = None) -> AflowSummary:
    """Run the query of ``config``; write structures to ``config.out`` and rejects to
    ``config.rejects_path``. ``fetch`` replaces HTTP (tests replay recorded answers).

    Raises:
        FileExistsError: an output exists and ``config.overwrite`` is False.
        AflowError: the service failed; records fetched until then stay in the outputs
            (no outputs are left when the first request fails).
    """
    for path in (config.out, config.rejects_path):
        if path.exists() and not config.overwrite:
            raise FileExistsError(f"out: {path} exists (set overwrite to replace it)")
    if fetch is None:
        fetch = urllib_fetch(config.timeout_s, config.retries, config.retry_wait_s)
    if config.limit is not None and config.limit < config.page_size:
        config = dataclasses.replace(config, page_size=config.limit)
    for path in (config.out, config.rejects_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    pages, reported, failure = 0, None, None
    with _open_text(config.out) as out, open(config.rejects_path, "w", newline="") as rej:
        sink = _Sink(out, csv.writer(rej), config)
        sink.rejects.writerow(["id", "source", "reason"])
        try:
            for page, entries, total in iter_pages(config, fetch):
                pages += 1
                reported = total if reported is None else reported
                for i, entry in enumerate(entries[: sink.remaining()]):
                    sink.add(entry, f"aflux page {page} entry {i + 1}")
                if sink.remaining() == 0:
                    break
        except AflowError as exc:
            failure = exc
    if failure is not None:
        if pages == 0:  # nothing arrived: leave no empty outputs that block a rerun
            config.out.unlink()
            config.rejects_path.unlink()
        raise AflowError(f"{failure} ({sink.written} written, {sink.rejected} rejected "
                         f"before the failure, in {config.out})")
    return AflowSummary(sink.written, sink.rejected, pages, reported, config.out,
                        config.rejects_path)


def _entry_id(entry: Any) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("auid"), str):
        return entry["auid"]
    return ""
