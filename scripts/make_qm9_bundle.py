"""Pack QM9 training runs into the bundled molecular model (``fastgap predict --model qm9``).

Every run's targets become output columns (a target several runs predict: their mean). The
bundle is then scored on the validation and test molecules of the split (MAE, RMSE and R2
per output, eV) and the numbers are written into its card and MODEL_CARD.md.

    python scripts/make_qm9_bundle.py benchmarks/runs/qm9_orbitals_r2_s0 --store qm9.zarr \
        --out fastgap/models/qm9

The runs must have been trained on ``--split`` (their ``split.json`` holds the same ids), so
the scores are on molecules none of them trained on; the runs' own test metrics stay in
their ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

QM9_DATA = "../shared/data/qm9/structures.jsonl.gz"
QM9_DESCRIPTION = ("QM9 (Ramakrishnan et al. 2014, B3LYP/6-31G(2df,p) geometries and "
                   "orbital energies), 130,831 molecules, from the qm9pack 1.0.3 wheel; MIT")
PARTS = ("val", "test")
# atoms per molecule (hydrogens included): QM9 has 3-29; the smallest are few in training
SIZE_BINS = ((1, 9), (10, 14), (15, 19), (20, 29))


def check_split(runs: list[Path], split_file: Path) -> None:
    """Refuse a run not trained on ``split_file``: its ``split.json`` (the ids of each part)
    must equal the file's parts; an archived run without one must name a split file of the
    same name in its ``config.json`` and use every molecule (no ``where`` filter)."""
    split = json.loads(split_file.read_text())
    for run in runs:
        if not (run / "split.json").is_file():
            config = json.loads((run / "config.json").read_text())
            if Path(config.get("split_file", "")).name != split_file.name or config.get("where"):
                raise ValueError(f"{run}: trained on split file {config.get('split_file')!r} "
                                 f"with where={config.get('where')!r}, not on {split_file}")
            continue
        saved = json.loads((run / "split.json").read_text())
        bad = [p for p in ("train", *PARTS) if sorted(saved.get(p, [])) != sorted(split[p])]
        if bad:
            raise ValueError(f"{run}: its split.json differs from --split in {bad}; the "
                             "bundle's scores need molecules no member trained on")


def restrict_elements(bundle_dir: Path, store_path: str, split: dict[str, list[str]]) -> list[int]:
    """Record in the card, per member, the elements of the split's training molecules (all
    members trained on that split), so the bundle rejects inputs holding another element."""
    from fastgap.domain import ELEMENTS_KEY, element_set
    from fastgap.store import Store

    data = Store.open(store_path).load()
    where = {i: n for n, i in enumerate(data.ids.astype(str))}
    elements = element_set(data.numbers, data.atom_ptr, [where[i] for i in split["train"]])
    card = json.loads((bundle_dir / "card.json").read_text())
    for name in card["members"]["others"]:
        card["provenance"][name][ELEMENTS_KEY] = elements
    (bundle_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return elements


def score(bundle_dir: Path, store_path: str, split: dict[str, list[str]],
          batch_size: int) -> dict[str, Any]:
    """{part: {target: regression metrics}, "n": {part: molecules}} of the bundle, and
    "test_by_atoms": {"lo-hi atoms": {"n": molecules, target: MAE}} on the test part."""
    from fastgap.ensemble import load_bundle
    from fastgap.metrics import regression_metrics
    from fastgap.screening import predict_featurized
    from fastgap.store import Store

    bundle = load_bundle(bundle_dir)
    store = Store.open(store_path)
    where = {i: n for n, i in enumerate(store.ids.astype(str))}
    out: dict[str, Any] = {"n": {}}
    for part in PARTS:
        missing = [i for i in split[part] if i not in where]
        if missing:
            raise ValueError(f"{part}: {len(missing)} ids are not in the store "
                             f"{store_path!r}, e.g. {missing[0]!r}")
        batch = store.load(np.sort([where[i] for i in split[part]]))
        cols = predict_featurized(bundle, batch, tta=True, batch_size=batch_size)
        out[part] = {t: regression_metrics(batch.properties[t], pred)
                     for t, pred in cols.items() if t in batch.properties}
        out["n"][part] = batch.n_structures
        if part == "test":
            out["test_by_atoms"] = by_size(np.diff(batch.atom_ptr), cols, batch.properties)
    return out


def by_size(atoms: np.ndarray, preds: dict[str, np.ndarray],
            truth: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """{"lo-hi": {"n": molecules, target: MAE or None}} over `SIZE_BINS` of ``atoms`` (S,)."""
    out = {}
    for lo, hi in SIZE_BINS:
        sel = (atoms >= lo) & (atoms <= hi)
        out[f"{lo}-{hi}"] = {"n": int(sel.sum()), **{
            t: float(np.mean(np.abs(p[sel] - truth[t][sel]))) if sel.any() else None
            for t, p in preds.items() if t in truth}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--store", required=True, help="the featurized QM9 store")
    parser.add_argument("--split", type=Path, default=Path("benchmarks/splits/qm9.json"))
    parser.add_argument("--data", default=QM9_DATA, help="the records the store was made from")
    parser.add_argument("--out", type=Path, default=Path("fastgap/models/qm9"))
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    from fastgap.bundle_card import pack_bundle, source_fields, write_model_card

    split = json.loads(args.split.read_text())
    check_split(args.runs, args.split)
    card = source_fields(args.data, args.split, 0, QM9_DESCRIPTION)
    card.pop("combination_rule")
    card["name"] = "fastgap QM9 model (molecular HOMO, LUMO and HOMO-LUMO gap, eV)"
    card["filters"] = {"others": "all molecules of the split's training part"}
    card["command"] = shlex.join(["python", "scripts/make_qm9_bundle.py", *sys.argv[1:]])
    pack_bundle(args.out, [], [], card, others=args.runs)
    restrict_elements(args.out, args.store, split)
    metrics = score(args.out, args.store, split, args.batch_size)
    write_model_card(args.out, metrics=metrics)
    for part in PARTS:
        cells = ", ".join(f"{t} {m['mae']:.4f}" for t, m in metrics[part].items())
        print(f"{part} ({metrics['n'][part]} molecules) MAE eV: {cells}")
    for size, row in metrics["test_by_atoms"].items():
        cells = ", ".join(f"{t} {v:.4f}" for t, v in row.items() if t != "n" and v is not None)
        print(f"test, {size} atoms ({row['n']} molecules) MAE eV: {cells}")
    print(f"bundle {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
