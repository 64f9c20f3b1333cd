"""Readers: every input format -> `fastgap.structures.Structure` records, or `Reject`s.

Two steps, so that parsing can run in worker processes:

1. `iter_raw(inputs)` streams cheap, picklable `RawItem`s in input order (files, directories,
   tar archives, JSON-lines lines, objects);
2. `parse_raw(item, policy)` turns one item into structures or rejections (pure).

`iter_structures` chains both and rejects a second, different input whose id was already seen
(`DuplicateIds`); `read_structures` is the convenience that raises on the first rejection.

Ids: a JSON-lines record carries its own; a file's id is its name without the extension;
``POSCAR``/``CONTCAR`` files get ``<parent dir>_<name>``; extxyz frames the ``id=`` of their
comment line, else ``<stem>:<frame>``;
CIFs with several data blocks ``<stem>:<block>``; objects their own id (fastgap ``Structure``,
pymatgen ``properties["id"]``, ASE ``info["id"]``), else ``object-<input index>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fastgap.readers._batch import (
    ParsedBatch,
    collect,
    from_records,
    from_unchecked,
    parse_lines,
)
from fastgap.readers._cif import majority_species, parse_cif
from fastgap.readers._formats import (
    parse_extxyz,
    parse_jsonl_record,
    parse_poscar,
    record_id,
)
from fastgap.readers._sources import (
    RawItem,
    check_paths,
    detect_format,
    file_id,
    iter_raw,
    iter_raw_chunks,
)
from fastgap.structures import MOLECULE_PADDING, Reject, Structure, from_ase, from_pymatgen

__all__ = [
    "DuplicateIds",
    "ParsedBatch",
    "RawItem",
    "ReadPolicy",
    "check_paths",
    "detect_format",
    "file_id",
    "iter_raw",
    "iter_raw_chunks",
    "iter_structures",
    "parse_batch",
    "parse_raw",
    "read_structures",
]

_DISORDER = ("reject", "majority")
_CIF_ENGINES = ("auto", "gemmi", "pymatgen")


@dataclass(frozen=True)
class ReadPolicy:
    """How readers treat what is not a plain ordered structure.

    Attributes:
        disorder: "reject" (default) rejects partially occupied sites; "majority" (opt-in)
            keeps, at each position, the species with the largest occupancy and drops the
            others (vacancies included): an approximation of the real material.
        molecule_padding: Å of empty space around a molecule in the box built for it.
        cif_engine: "auto" (gemmi, then pymatgen for what gemmi cannot parse), "gemmi" or
            "pymatgen".
    """

    disorder: str = "reject"
    molecule_padding: float = MOLECULE_PADDING
    cif_engine: str = "auto"

    def __post_init__(self) -> None:
        if self.disorder not in _DISORDER:
            raise ValueError(f"disorder: expected one of {_DISORDER}, got {self.disorder!r}")
        if self.cif_engine not in _CIF_ENGINES:
            raise ValueError(f"cif_engine: expected one of {_CIF_ENGINES}, got {self.cif_engine!r}")
        if not self.molecule_padding > 0:
            raise ValueError(
                f"molecule_padding: expected a positive length in Å, got {self.molecule_padding!r}"
            )


class DuplicateIds:
    """Remembers the source of every id; a second, different source with the same id is rejected.

    The same source seen again (a re-run over the same input) is not a duplicate.
    """

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, id: object) -> bool:
        return id in self._first

    def check(self, id: str, source: str) -> Reject | None:
        """None if ``id`` is new (and remember it), else the `Reject` of this second input."""
        first = self._first.setdefault(id, source)
        if first == source:
            return None
        return Reject(id, source, f"duplicate id {id!r}, first seen in {first}")

    def __call__(self, record: Structure | Reject) -> Structure | Reject:
        """Pass a record through: structures with an already seen id become rejections."""
        if isinstance(record, Reject):
            return record
        return self.check(record.id, record.source) or record


def parse_raw(item: RawItem, policy: ReadPolicy | None = None) -> list[Structure | Reject]:
    """Parse one `RawItem` into structures (several for multi-frame files) or rejections."""
    policy = policy or ReadPolicy()
    if item.format == "jsonl-block":  # (first line number, lines) of one file
        first, block = item.payload
        return [rec for number, line in enumerate(block, start=first) if line.strip()
                for rec in parse_raw(RawItem(None, f"{item.source}:line {number}", "jsonl",
                                             line), policy)]  # fmt: skip
    try:
        return list(_parse(item, policy))
    except (ValueError, TypeError) as exc:
        return [Reject(_reject_id(item), item.source, str(exc))]


def parse_batch(items: Iterable[RawItem], policy: ReadPolicy | None = None) -> ParsedBatch:
    """Parse many items (`iter_raw` or `iter_raw_chunks` output) into one `ParsedBatch`.

    The same structures, rejections and order as `parse_raw` on each item; runs of
    JSON-lines records are parsed in bulk (see ``fastgap.readers._batch``).
    """
    policy = policy or ReadPolicy()

    def slow(line: bytes, source: str) -> list[Structure | Reject]:
        return parse_raw(RawItem(None, source, "jsonl", line), policy)

    parts: list[ParsedBatch] = []
    lines: list[bytes] = []
    sources: list[str] = []
    cifs: list[list[Structure] | Reject] = []

    def settle() -> None:  # the pending runs of lines and CIFs, in input order
        nonlocal lines, sources, cifs
        if lines:
            parts.append(parse_lines(lines, sources, slow))
        if cifs:
            parts.append(from_unchecked(cifs))
        lines, sources, cifs = [], [], []

    for item in items:
        if item.format in ("jsonl-block", "jsonl"):
            if cifs:
                settle()
            if item.format == "jsonl":
                lines.append(item.payload)
                sources.append(item.source)
                continue
            first, block = item.payload
            for number, line in enumerate(block, start=first):
                if line.strip():
                    lines.append(line)
                    sources.append(f"{item.source}:line {number}")
        elif item.format == "cif" and item.id is not None:
            if lines:
                settle()
            cifs.append(_parse_cif_unchecked(item, policy))
        else:
            settle()
            parts.append(from_records(parse_raw(item, policy)))
    settle()
    return collect(parts)


def _parse_cif_unchecked(item: RawItem, policy: ReadPolicy) -> list[Structure] | Reject:
    """`parse_raw` of a CIF item, leaving `Structure.validate` of gemmi results to the caller."""
    try:
        text = _text(item.payload)
        return parse_cif(text, str(item.id), item.source, policy.cif_engine, policy.disorder,
                         check=False)  # fmt: skip
    except (ValueError, TypeError) as exc:
        return Reject(_reject_id(item), item.source, str(exc))


def _reject_id(item: RawItem) -> str:
    if item.id is not None:
        return item.id
    if item.format == "jsonl":
        return record_id(item.payload) or item.source
    return item.source


def _parse(item: RawItem, policy: ReadPolicy) -> list[Structure]:
    if item.format == "jsonl":
        try:
            rec = orjson.loads(item.payload)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"JSON: malformed line ({exc})") from None
        return [parse_jsonl_record(rec, item.source, policy.molecule_padding)]
    if item.format == "object":
        return [_parse_object(item, policy)]
    if item.format == "unknown":
        raise ValueError("file: unrecognised type (expected .cif, POSCAR, .vasp, .xyz, .jsonl)")
    text = _text(item.payload)
    if item.id is None:
        raise ValueError(f"id: a {item.format} item needs an id, got None")
    if item.format == "cif":
        return parse_cif(text, item.id, item.source, policy.cif_engine, policy.disorder)
    if item.format == "poscar":
        return [parse_poscar(text, item.id, item.source)]
    if item.format == "xyz":
        return list(parse_extxyz(text, item.id, item.source, policy.molecule_padding))
    raise ValueError(f"format: expected jsonl, cif, poscar, xyz or object, got {item.format!r}")


def _text(payload: bytes | str) -> str:
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("file: not UTF-8 text (binary or corrupt)") from None
    if not payload.strip():
        raise ValueError("file: empty")
    return payload


def _parse_object(item: RawItem, policy: ReadPolicy) -> Structure:
    obj, rid = item.payload, item.id or item.source
    if isinstance(obj, Structure):
        return dataclasses.replace(obj, source=obj.source or item.source).validate()
    if type(obj).__module__.startswith("ase"):
        return from_ase(obj, rid, item.source, policy.molecule_padding)
    if policy.disorder == "majority":
        obj = majority_species(obj)
    return from_pymatgen(obj, rid, item.source, policy.molecule_padding)


def iter_structures(
    inputs: Iterable[str | Path | Any], policy: ReadPolicy | None = None
) -> Iterator[Structure | Reject]:
    """Structures and rejections in input order, with duplicate ids rejected."""
    seen = DuplicateIds()
    for item in iter_raw(inputs):
        for record in parse_raw(item, policy):
            yield seen(record)


def read_structures(
    inputs: Iterable[str | Path | Any], policy: ReadPolicy | None = None
) -> list[Structure]:
    """All structures of ``inputs``; a ``ValueError`` on the first rejection."""
    out = []
    for record in iter_structures(inputs, policy):
        if isinstance(record, Reject):
            raise ValueError(f"{record.source}: {record.reason}")
        out.append(record)
    return out
