"""Training labels from a CSV file, joined to a featurized store by structure id.

Structures featurized from CIF / POSCAR files carry no properties; their labels usually live
in a table beside them. Two layouts are read:

- with a header: an ``id`` column and one column per property (names as in ``--target``,
  units in the name, e.g. ``band_gap_eV``); empty cells are missing values (NaN);
- without a header, CGCNN's ``id_prop.csv``: ``id,value`` rows. The value column takes the
  name of the run's single target.

The ids are those the readers give the structures (a CIF's file stem, a JSON-lines record's
``id``). Label columns replace store properties of the same name. Structures without a
label get NaN (and are left out of training on that target); labels whose id matches no
structure are counted in the report (`LabelReport`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fastgap.digest import file_sha256

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch


@dataclass
class LabelReport:
    """What a label file contributed: its columns and how many rows found a structure."""

    path: str
    sha256: str
    columns: list[str]
    rows: int
    matched: int
    unmatched: int
    first_unmatched: list[str] = field(default_factory=list)  # up to 5 ids, file order

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _number(text: str, where: str) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"labels: {where}: expected a number or an empty cell, got "
                         f"{text!r}") from None
    if math.isinf(value):
        raise ValueError(f"labels: {where}: infinite value {text!r}")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labels(path: str | Path, targets: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read a label CSV.

    Args:
        path: CSV with a header (an ``id`` column + property columns) or CGCNN's headerless
            ``id,value``.
        targets: the run's targets; a headerless file needs exactly one (it names the
            value column).

    Returns:
        ids: the row ids, file order, all distinct.
        columns: property name -> (R,) float64, NaN where the cell is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels: no file at {str(path)!r}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"labels: {str(path)!r} is empty")
    first = rows[0]
    headerless = len(first) >= 2 and all(_is_number(c) or not c.strip() for c in first[1:])
    if headerless:
        if len(first) != 2:
            raise ValueError(f"labels: {str(path)!r} has no header and {len(first)} columns; "
                             f"a headerless file is CGCNN's 'id,value' (give a header row "
                             f"with 'id' and the property names for more columns)")
        if len(targets) != 1:
            raise ValueError(f"labels: {str(path)!r} has no header, so its value column is "
                             f"named after the target; expected one target, got {targets}")
        names, body, id_col, line0 = [targets[0]], rows, 0, 1
    else:
        header = [c.strip() for c in first]
        if "id" not in header:
            raise ValueError(f"labels: {str(path)!r}: the header {header} has no 'id' column")
        if len(set(header)) != len(header):
            raise ValueError(f"labels: {str(path)!r}: repeated column names in {header}")
        id_col = header.index("id")
        names = [h for i, h in enumerate(header) if i != id_col]
        if not names:
            raise ValueError(f"labels: {str(path)!r} has an id column and no property column")
        body, line0 = rows[1:], 2
    value_cols = [i for i in range(len(names) + 1) if i != id_col]
    ids: list[str] = []
    values = np.full((len(body), len(names)), np.nan)
    seen: dict[str, int] = {}
    for r, row in enumerate(body):
        line = line0 + r
        if len(row) != len(names) + 1:
            raise ValueError(f"labels: {str(path)!r} line {line}: expected {len(names) + 1} "
                             f"cells, got {len(row)}")
        id_ = row[id_col].strip()
        if not id_:
            raise ValueError(f"labels: {str(path)!r} line {line}: empty id")
        if id_ in seen:
            raise ValueError(f"labels: {str(path)!r} line {line}: id {id_!r} repeats line "
                             f"{seen[id_]}")
        seen[id_] = line
        ids.append(id_)
        for j, c in enumerate(value_cols):
            values[r, j] = _number(row[c], f"{str(path)!r} line {line}, column {names[j]!r}")
    return ids, {name: values[:, j] for j, name in enumerate(names)}


def attach_labels(featurized: FeaturizedBatch, path: str | Path,
                  targets: list[str]) -> tuple[FeaturizedBatch, LabelReport]:
    """``featurized`` with the label columns of ``path`` as properties (joined by id)."""
    ids, columns = read_labels(path, targets)
    row_of = {id_: r for r, id_ in enumerate(ids)}
    struct_ids = [str(i) for i in featurized.ids]
    rows = np.array([row_of.get(i, -1) for i in struct_ids], dtype=np.int64)
    found = rows >= 0
    properties = dict(featurized.properties)
    for name, col in columns.items():
        joined = np.full(len(struct_ids), np.nan)
        joined[found] = col[rows[found]]
        properties[name] = joined
    in_store = set(struct_ids)
    unmatched = [i for i in ids if i not in in_store]
    if ids and len(unmatched) == len(ids):
        raise ValueError(f"labels: no id of {str(path)!r} names a structure of the data "
                         f"(file ids like {ids[:3]}, structure ids like {struct_ids[:3]})")
    report = LabelReport(
        path=str(path), sha256=file_sha256(path),
        columns=list(columns), rows=len(ids), matched=len(ids) - len(unmatched),
        unmatched=len(unmatched), first_unmatched=unmatched[:5],
    )
    return dataclasses.replace(featurized, properties=properties), report
