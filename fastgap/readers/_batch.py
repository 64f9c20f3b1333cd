"""Bulk parsing: many `RawItem`s -> one `StructureBatch` plus input-order records.

JSON-lines crystal records take a vectorised path: each line is decoded and looked at once
in Python (types, symbol -> atomic number through a dict), then the lattices and coordinates
of the whole run of lines become two NumPy arrays and `batch_suspects` checks them in one go.
Anything unusual (molecules, malformed or suspicious records, other formats) goes through
`parse_raw`, the per-record reader, so reasons and results are the same on both paths.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from fastgap.structure_batch import StructureBatch, batch_suspects
from fastgap.structures import ATOMIC_NUMBERS, Reject, Structure

#: ``(kind, id, source, reason)`` per input record: kind "ok" (next batch row) or "reject".
Record = tuple[str, str, str, str]


@dataclass(eq=False)
class ParsedBatch:
    """Parsed structures of many raw items: ``records`` in input order, one per record;
    the i-th "ok" record is row i of ``batch``."""

    batch: StructureBatch
    records: list[Record]


def _empty_batch() -> StructureBatch:
    return StructureBatch.from_structures([])


def parse_lines(
    lines: Sequence[bytes], sources: Sequence[str], slow: Callable[[bytes, str], list[Any]]
) -> ParsedBatch:
    """JSON-lines records (one per line, no blank lines) -> `ParsedBatch`.

    ``slow(line, source)`` is the per-record reader (`parse_raw` on one line) used for
    everything the fast path does not accept as certainly valid.
    """
    table = ATOMIC_NUMBERS
    fast: list[int] = []  # positions handled by the vectorised path
    ids, lats, fracs, zs, props = [], [], [], [], []
    for pos, line in enumerate(lines):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if type(rec) is not dict:
            continue
        rid, species = rec.get("id"), rec.get("species")
        lat, frac, prop = rec.get("lattice"), rec.get("frac_coords"), rec.get("properties")
        if not (type(rid) is str and rid and type(species) is list and species
                and type(lat) is list and type(frac) is list and len(frac) == len(species)
                and (prop is None or type(prop) is dict)):  # fmt: skip
            continue
        try:
            z = [table[s] for s in species]
        except (KeyError, TypeError):
            continue
        fast.append(pos)
        ids.append(rid)
        lats.append(lat)
        fracs.append(frac)
        zs.append(z)
        props.append(prop)
    arrays = _arrays(lats, fracs, zs)
    if arrays is None:  # a ragged or non-numeric record: leave it to `slow`, retry the rest
        rows = [i for i, (lat, frac) in enumerate(zip(lats, fracs)) if _well_shaped(lat, frac)]
        fast, ids, lats, fracs, zs, props = ([x[i] for i in rows]
                                             for x in (fast, ids, lats, fracs, zs, props))
        arrays = _arrays(lats, fracs, zs)
    batch, ok = _vectorise(ids, [sources[p] for p in fast], arrays, props)
    return _merge(lines, sources, fast, batch, ok, slow)


def _vectorise(ids: list[str], sources: list[str], arrays: tuple[np.ndarray, ...] | None,
               props: list[Any]) -> tuple[StructureBatch, np.ndarray]:
    """The fast-path batch and an (S,) bool mask of the rows that passed the checks."""
    if arrays is None:
        return _empty_batch(), np.zeros(len(ids), dtype=bool)
    lattices, frac, numbers, ptr = arrays
    pbc = np.ones((len(ids), 3), dtype=bool)
    ok = ~batch_suspects(lattices, frac, ptr, pbc)
    batch = StructureBatch(ids, sources, lattices, frac, numbers, ptr, pbc,
                           [_json_properties(p) for p in props])  # fmt: skip
    return batch, ok


def _arrays(lats: list[Any], fracs: list[Any], zs: list[list[int]]) -> tuple[np.ndarray, ...] | None:
    """(lattices (S, 3, 3), frac (A, 3), numbers (A,), atom_ptr (S+1,)), or None if ragged."""
    s = len(lats)
    ptr = np.zeros(s + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, zs), dtype=np.int64, count=s), out=ptr[1:])
    try:
        lattices = np.array(lats, dtype=np.float64)
        frac = np.array(list(itertools.chain.from_iterable(fracs)), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if lattices.shape != (s, 3, 3) or frac.shape != (int(ptr[-1]), 3):
        return None
    numbers = np.fromiter(itertools.chain.from_iterable(zs), dtype=np.int64, count=int(ptr[-1]))
    return lattices, frac, numbers, ptr


def _well_shaped(lat: Any, frac: Any) -> bool:
    try:
        return (np.array(lat, dtype=np.float64).shape == (3, 3)
                and np.array(frac, dtype=np.float64).shape == (len(frac), 3))  # fmt: skip
    except (TypeError, ValueError):
        return False


_NUMERIC_JSON = (float, int, bool)


def _json_properties(properties: dict[str, Any] | None) -> dict[str, float]:
    """`_numeric_properties` for decoded JSON objects (str keys, JSON value types)."""
    if not properties:
        return {}
    return {k: (math.nan if v is None else float(v)) for k, v in properties.items()
            if v is None or type(v) in _NUMERIC_JSON}  # fmt: skip


def _merge(lines: Sequence[bytes], sources: Sequence[str], fast: list[int],
           batch: StructureBatch, ok: np.ndarray, slow: Callable[[bytes, str], list[Any]],
           ) -> ParsedBatch:  # fmt: skip
    """Records in input order; rows the fast path did not pass are parsed one by one."""
    if ok.all() and len(fast) == len(lines):
        return ParsedBatch(batch, [("ok", i, s, "") for i, s in zip(batch.ids, batch.sources)])
    row_of = {pos: row for row, pos in enumerate(fast) if ok[row]}
    rows: list[int] = []  # batch row (>= 0) or -(1 + index into extra) per "ok" record
    extra: list[Structure] = []
    records: list[Record] = []
    for pos, line in enumerate(lines):
        if pos in row_of:
            rows.append(row_of[pos])
            records.append(("ok", batch.ids[row_of[pos]], sources[pos], ""))
            continue
        for rec in slow(line, sources[pos]):
            if isinstance(rec, Reject):
                records.append(("reject", rec.id, rec.source, rec.reason))
            else:
                rows.append(-1 - len(extra))
                extra.append(rec)
                records.append(("ok", rec.id, rec.source, ""))
    both = StructureBatch.concat([batch, StructureBatch.from_structures(extra)])
    order = np.array([r if r >= 0 else batch.n_structures - 1 - r for r in rows], dtype=np.int64)
    return ParsedBatch(both.select(order), records)


def collect(parts: list[ParsedBatch]) -> ParsedBatch:
    """One `ParsedBatch` from several, in order."""
    if not parts:
        return ParsedBatch(_empty_batch(), [])
    if len(parts) == 1:
        return parts[0]
    batch = StructureBatch.concat([p.batch for p in parts])
    return ParsedBatch(batch, [r for p in parts for r in p.records])


def from_records(records: list[Structure | Reject]) -> ParsedBatch:
    """`ParsedBatch` of per-record reader output (structures and rejections, in order)."""
    out: list[Record] = []
    good: list[Structure] = []
    for rec in records:
        if isinstance(rec, Reject):
            out.append(("reject", rec.id, rec.source, rec.reason))
        else:
            good.append(rec)
            out.append(("ok", rec.id, rec.source, ""))
    return ParsedBatch(StructureBatch.from_structures(good), out)


def from_unchecked(groups: list[list[Structure] | Reject]) -> ParsedBatch:
    """`ParsedBatch` of per-item reader output whose structures were not validated yet.

    One entry per raw item: its structures (not yet `Structure.validate`-d) or its
    rejection. The structures are checked together with `batch_suspects`; a suspect one is
    validated alone, and if that fails the whole item is rejected with the reason, exactly
    as the per-item reader would have done.
    """
    candidates = [s for g in groups if not isinstance(g, Reject) for s in g]
    batch = StructureBatch.from_structures(candidates)
    suspect = np.zeros(len(candidates), dtype=bool)
    if candidates:
        suspect = batch_suspects(batch.lattices, batch.frac_coords, batch.atom_ptr, batch.pbc)
    records: list[Record] = []
    keep: list[int] = []
    row = 0
    for group in groups:
        if isinstance(group, Reject):
            records.append(("reject", group.id, group.source, group.reason))
            continue
        rows = range(row, row + len(group))
        row += len(group)
        reason = _first_failure([candidates[r] for r in rows if suspect[r]])
        if reason is not None:
            records.append(("reject", reason.id, reason.source, reason.reason))
            continue
        keep.extend(rows)
        records.extend(("ok", s.id, s.source, "") for s in group)
    return ParsedBatch(batch if len(keep) == len(candidates) else batch.select(keep), records)


def _first_failure(structures: list[Structure]) -> Reject | None:
    for s in structures:
        try:
            s.validate()
        except (ValueError, TypeError) as exc:
            return Reject(s.id, s.source, str(exc))
    return None
