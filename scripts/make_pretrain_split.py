"""Write a pretraining split: a base split minus the val and test structures of other tasks.

A model pretrained on one dataset and fine-tuned on another (``fastgap train --init-from``)
must not have seen the fine-tuning task's validation or test structures. This removes them
from the base split's train and val parts: by id, and with ``--base-data`` /
``--exclude-data`` also every base structure that pymatgen's ``StructureMatcher`` (default
tolerances, same reduced formula) finds equal to one of them, since a dataset can hold the
same crystal under another id. The base test part is kept as it is (it is never trained
on), so a fine-tune on the base dataset itself keeps its own test set clean too.

    python scripts/make_pretrain_split.py benchmarks/splits/mp_gap36k.json \
        benchmarks/splits/mp_gap36k_pretrain.json \
        --exclude benchmarks/splits/mp_elastic3k.json benchmarks/splits/mp_eform4k.json \
        --base-data ../shared/data/mp_gap36k/structures.jsonl.gz \
        --exclude-data ../shared/data/mp_elastic3k/structures.jsonl.gz \
                       ../shared/data/mp_eform4k/structures.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def read_records(path: Path, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The JSON-lines(.gz) records of ``path`` whose id is in ``ids``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        records = (json.loads(line) for line in fh if line.strip())
        return {r["id"]: r for r in records if r["id"] in ids}


def _structure(record: dict[str, Any]) -> Any:
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice(record["lattice"]), record["species"], record["frac_coords"])


def structure_matches(base: dict[str, dict], held_out: dict[str, dict]) -> dict[str, str]:
    """{base id: held-out id} for every base record equal to a held-out one (StructureMatcher)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from tqdm import tqdm

    by_formula: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for rid, rec in held_out.items():
        s = _structure(rec)
        by_formula[s.composition.reduced_formula].append((rid, s))
    matcher, found = StructureMatcher(), {}
    for rid, rec in tqdm(base.items(), desc="matching structures", unit="structure"):
        s = _structure(rec)
        for other, t in by_formula.get(s.composition.reduced_formula, []):
            if matcher.fit(s, t):
                found[rid] = other
                break
    return found


def pretrain_split(base: dict, excluded: list[dict], matched: set[str] = frozenset()) -> dict:
    """``base`` without the val / test ids of ``excluded`` and the ``matched`` ids in train / val."""
    for name, split in [("base", base), *((f"exclude[{i}]", s) for i, s in enumerate(excluded))]:
        missing = {"train", "val", "test"} - set(split)
        if missing:
            raise ValueError(f"{name}: expected keys train, val, test; missing {sorted(missing)}")
    held_out = {i for s in excluded for part in ("val", "test") for i in s[part]}
    out = {k: v for k, v in base.items() if k not in ("train", "val", "test")}
    removed = {}
    for part in ("train", "val"):
        out[part] = [i for i in base[part] if i not in held_out and i not in matched]
        removed[part] = {"by_id": sum(i in held_out for i in base[part]),
                         "by_structure": sum(i in matched and i not in held_out for i in base[part])}
    out["test"] = list(base["test"])
    out["removed"] = removed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="split JSON of the pretraining dataset")
    parser.add_argument("out", type=Path, help="where to write the pretraining split")
    parser.add_argument("--exclude", type=Path, nargs="+", required=True,
                        help="split JSONs of the fine-tuning tasks (their val + test are held out)")
    parser.add_argument("--base-data", type=Path, help="JSON-lines of the pretraining dataset")
    parser.add_argument("--exclude-data", type=Path, nargs="*", default=[],
                        help="JSON-lines of each --exclude task, same order: match structures too")
    args = parser.parse_args()
    base = json.loads(args.base.read_text())
    excluded = [json.loads(p.read_text()) for p in args.exclude]
    matched: dict[str, str] = {}
    if args.base_data or args.exclude_data:
        if not args.base_data or len(args.exclude_data) != len(args.exclude):
            parser.error("--base-data and one --exclude-data file per --exclude split go together")
        held = {}
        for split, path in zip(excluded, args.exclude_data):
            held.update(read_records(path, set(split["val"]) | set(split["test"])))
        candidates = read_records(args.base_data, set(base["train"]) | set(base["val"]))
        matched = structure_matches(candidates, held)
    split = pretrain_split(base, excluded, set(matched))
    split["excluded_from"] = [p.name for p in args.exclude]
    split["structure_matches"] = matched
    args.out.write_text(json.dumps(split) + "\n")
    print(f"{args.out}: train {len(split['train'])}, val {len(split['val'])}, "
          f"test {len(split['test'])}; removed {split['removed']}")


if __name__ == "__main__":
    main()
