"""Task inputs: sampled JSON-lines subsets, cached feature stores and derived targets.

A ``fast`` setting samples a few hundred records from the fixed split (the same fraction
from train, val and test, seeded), writes them to a small JSON-lines file and featurizes
that; the ``full`` setting featurizes the whole dataset. Stores are cached under the output
directory and reused when complete (a ``done.json`` marker is written after featurizing).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fastgap.features import FeaturizedBatch, FeaturizerConfig
from fastgap.structures import Structure

DATA_FILE = "structures.jsonl.gz"
PARTS = ("train", "val", "test")


def dataset_file(data_root: str | Path, dataset: str) -> Path:
    """``<data_root>/<dataset>/structures.jsonl.gz``; FileNotFoundError naming it if absent."""
    path = Path(data_root) / dataset / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"data_root: no dataset file {str(path)!r}")
    return path


def read_split(path: str | Path) -> dict[str, list[str]]:
    """The train / val / test id lists of a split file (JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split: no split file {str(path)!r}")
    data = json.loads(path.read_text())
    missing = [p for p in PARTS if p not in data]
    if missing:
        raise ValueError(f"split: expected keys {PARTS} in {str(path)!r}, missing {missing}")
    return {p: [str(i) for i in data[p]] for p in PARTS}


def iter_lines(path: Path) -> Iterable[bytes]:
    """Non-empty lines of a JSON-lines file, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield line


def all_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in iter_lines(path)]


def sample_ids(ids_by_part: dict[str, list[str]], n: int, rng: np.random.Generator) -> set[str]:
    """``n`` ids in total, the same fraction of every part (at least one each when possible)."""
    total = sum(len(v) for v in ids_by_part.values())
    if n <= 0 or n >= total:
        return {i for v in ids_by_part.values() for i in v}
    out: set[str] = set()
    for ids in ids_by_part.values():
        take = min(len(ids), max(1, round(n * len(ids) / total)))
        out.update(ids[j] for j in rng.choice(len(ids), size=take, replace=False))
    return out


def write_subset(src: Path, ids: set[str], dest: Path) -> int:
    """Copy the records of ``src`` whose id is in ``ids`` to ``dest`` (gzip); returns the count."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    count = 0
    with gzip.open(tmp, "wb") as out:
        for line in iter_lines(src):
            if orjson.loads(line)["id"] in ids:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                count += 1
    tmp.replace(dest)
    return count


def prepare_input(src: Path, cache: Path, key: str, split: dict[str, list[str]] | None,
                  n: int, seed: int) -> Path:
    """The JSON-lines file a task featurizes: ``src`` itself, or a cached seeded subset."""
    if n <= 0:
        return src
    dest = cache / "inputs" / f"{key}.jsonl.gz"
    if dest.is_file():
        return dest
    parts = split if split is not None else {"all": all_ids(src)}
    write_subset(src, sample_ids(parts, n, np.random.default_rng(seed)), dest)
    return dest


def feature_store(inputs: Path, cache: Path, key: str, featurizer: FeaturizerConfig,
                  workers: int) -> tuple[Path, dict[str, Any]]:
    """Featurize ``inputs`` into ``<cache>/stores/<key>`` once; returns (path, summary)."""
    from fastgap.featurize import FeaturizeConfig, featurize

    path = cache / "stores" / key
    done = path / "done.json"
    if done.is_file():
        return path, json.loads(done.read_text())
    cfg = FeaturizeConfig(featurizer=featurizer, workers=workers, progress=False)
    summary = featurize([inputs], path, cfg)
    info = {"inputs": summary.inputs, "written": summary.written, "rejected": summary.rejected,
            "skipped": summary.skipped, "source": str(inputs)}
    done.write_text(json.dumps(info, indent=2) + "\n")
    return path, info


def load_store(path: Path) -> FeaturizedBatch:
    from fastgap.store import Store

    return Store.open(path).load()


def apply_derive(batch: FeaturizedBatch, derive: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    """Add derived targets to ``batch.properties`` in place; returns dropped counts.

    ``("log10_K", "log10", "K_GPa")`` adds log10(K_GPa); values <= 0 become NaN and are
    counted under ``"<new>_dropped_nonpositive"``.
    """
    dropped = {}
    for new, op, source in derive:
        if op != "log10":
            raise ValueError(f"derive: expected op 'log10' for {new!r}, got {op!r}")
        if source not in batch.properties:
            raise ValueError(f"derive: property {source!r} not in the data; "
                             f"available: {sorted(batch.properties)}")
        values = np.asarray(batch.properties[source], dtype=np.float64)
        bad = ~(values > 0) & ~np.isnan(values)
        with np.errstate(divide="ignore", invalid="ignore"):
            batch.properties[new] = np.where(values > 0, np.log10(values), np.nan)
        dropped[f"{new}_dropped_nonpositive"] = int(bad.sum())
    return dropped


def read_structures_by_id(path: Path, ids: Iterable[str]) -> list[Structure]:
    """Parse the records of ``path`` whose id is in ``ids`` (in ``ids`` order)."""
    from fastgap.readers._formats import parse_jsonl_record
    from fastgap.structures import MOLECULE_PADDING

    wanted = list(ids)
    keep = set(wanted)
    found = {}
    for n, line in enumerate(iter_lines(path)):
        rec = orjson.loads(line)
        if rec["id"] in keep:
            found[rec["id"]] = parse_jsonl_record(rec, f"{path}:{n + 1}", MOLECULE_PADDING)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"ids: {len(missing)} not found in {str(path)!r}, e.g. {missing[:3]}")
    return [found[i] for i in wanted]
