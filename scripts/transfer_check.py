"""Apply a screening bundle to other band-gap sets (other functionals or MP releases).

    python scripts/transfer_check.py ../shared/data/jarvis_sample50/structures.jsonl.gz \
        ../shared/data/mp_dielectric1k/structures.jsonl.gz --out benchmarks/transfer.json

No training on these sets: the numbers say how the bundled model carries over to another
functional (JARVIS OptB88vdW) or another Materials Project release (mp_dielectric1k;
it may share materials with mp_gap36k's training split, with gaps recomputed).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np


def truth(path: Path) -> dict[str, float]:
    """id -> band_gap_eV of a JSON-lines(.gz) file (records without it are skipped)."""
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            gap = rec.get("properties", {}).get("band_gap_eV")
            if gap is not None:
                out[rec["id"]] = float(gap)
    return out


def main() -> None:
    import fastgap
    from fastgap.screening import PredictConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, nargs="+")
    p.add_argument("--model", default="default")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = []
    for path in args.data:
        df = fastgap.predict([path], args.model, PredictConfig(workers=0, progress=False))
        true = truth(path)
        y = np.array([true[i] for i in df["id"]])
        pred = df["band_gap_eV"].to_numpy()
        nz = y > 0
        rows.append({
            "dataset": path.parent.name, "n_predicted": len(df),
            "n_rejected": len(df.attrs.get("rejects", [])),
            "mae_all_eV": float(np.abs(pred - y).mean()),
            "mae_nonzero_eV": float(np.abs(pred[nz] - y[nz]).mean()) if nz.any() else None,
            "n_nonzero": int(nz.sum()),
            "metal_accuracy": float(((df["p_metal"].to_numpy() >= 0.5) == ~nz).mean()),
        })
        print(json.dumps(rows[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
