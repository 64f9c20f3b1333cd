"""Choose a screening bundle's members on the VALIDATION split of mp_gap36k.

Every candidate (a training run directory or a checkpoint) predicts the validation structures
once (axis-swap averaging as in `fastgap predict`). Band-gap regressors are scored by the MAE
of their mean on non-zero gaps, metal classifiers by the log-loss of their mean probability;
for each ensemble size the best subset is found by trying every subset (greedy forward
selection when there are more than ``--max-subsets`` of one size). The test split is never
read. Writes ``choice.json`` and ``choice.md`` into ``--out`` and prints the table.

    python scripts/choose_members.py --store runs/default_models/store \
        --gap runs/default_models/gap_seed{1,2,3,4,5} runs/default_models/gap_ft_seed{1,6,7} \
        --metal runs/default_models/metal_seed{0,1} runs/default_models/metal_b_seed0 \
        --n-gap 5 --n-metal 3 --out runs/default_models/choice
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

EPS = 1e-6  # probability clip of the log-loss


def mae_nonzero(true: np.ndarray, preds: np.ndarray) -> float:
    """MAE (eV) of the mean of ``preds`` (M, S) against ``true`` (S,) where ``true > 0``."""
    keep = true > 0
    return float(np.abs(preds.mean(axis=0) - true)[keep].mean())


def log_loss(true: np.ndarray, probs: np.ndarray) -> float:
    """Binary log-loss of the mean of ``probs`` (M, S) against metal = ``true == 0``."""
    p = np.clip(probs.mean(axis=0), EPS, 1 - EPS)
    y = true == 0
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def best_subsets(scores: np.ndarray, true: np.ndarray, metric: Callable, max_n: int,
                 max_subsets: int) -> list[dict]:
    """For n = 1..max_n the subset of rows of ``scores`` (M, S) minimising ``metric``.

    Exhaustive when C(M, n) <= ``max_subsets``, else greedy forward selection (the best
    subset of size n-1 plus the best remaining member). Returns one dict per size with
    ``members`` (indices, ascending) and ``value``.
    """
    m = len(scores)
    out: list[dict] = []
    chosen: tuple[int, ...] = ()
    for n in range(1, min(max_n, m) + 1):
        if math.comb(m, n) <= max_subsets:
            candidates = itertools.combinations(range(m), n)
        else:
            candidates = (tuple(sorted(chosen + (j,))) for j in range(m) if j not in chosen)
        value, chosen = min((metric(true, scores[list(c)]), c) for c in candidates)
        out.append({"n": n, "members": list(chosen), "value": value})
    return out


def member_predictions(paths: Sequence[str], target: str, batch, tta: bool) -> np.ndarray:
    """(M, S) float64 predictions of ``target`` by each checkpoint / run directory."""
    from fastgap.data import StructureDataset
    from fastgap.ensemble import load_bundle
    from fastgap.inference import angle_bins_of, predict_members

    members = []
    for path in paths:
        found = [m for m in load_bundle(path).members if target in m.targets]
        if len(found) != 1:
            raise ValueError(f"{path}: expected one model predicting {target!r}, found "
                             f"{len(found)}")
        members.append(found[0])
    models = [m.model for m in members]
    dataset = StructureDataset(batch, angle_bins=angle_bins_of(models))
    outs = predict_members(models, dataset, tta=tta)
    return np.stack([o[:, m.targets.index(target)] for m, o in zip(members, outs)])


def choose(batch, gap: Sequence[str], metal: Sequence[str], n_gap: int, n_metal: int, *,
           tta: bool = True, max_subsets: int = 5000) -> dict:
    """Score every candidate and the best subsets on ``batch`` (the validation structures)."""
    from fastgap.ensemble import GAP_TARGET, METAL_TARGET

    true = np.asarray(batch.properties["band_gap_eV"], dtype=np.float64)
    result: dict = {"n_structures": len(true), "n_nonzero": int((true > 0).sum())}
    for role, paths, target, metric, n in (
        ("band_gap", gap, GAP_TARGET, mae_nonzero, n_gap),
        ("metal", metal, METAL_TARGET, log_loss, n_metal),
    ):
        if not paths:
            continue
        preds = member_predictions(paths, target, batch, tta)
        sizes = best_subsets(preds, true, metric, n, max_subsets)
        result[role] = {
            "metric": metric.__name__,
            "candidates": [{"path": str(p), "value": metric(true, preds[[i]])}
                           for i, p in enumerate(paths)],
            "all": metric(true, preds),
            "best_by_size": [{**s, "paths": [str(paths[i]) for i in s["members"]]}
                             for s in sizes],
        }
    return result


def markdown(result: dict) -> str:
    lines = [(f"Validation split: {result['n_structures']} structures "
             f"({result['n_nonzero']} with gap > 0)."), ""]
    for role, label in (("band_gap", "MAE on gap > 0 (eV)"), ("metal", "log-loss")):
        if role not in result:
            continue
        r = result[role]
        lines += [(f"{role} candidates, {label} of each alone; all {len(r['candidates'])} "
                  f"averaged: {r['all']:.4f}"), "", "| candidate | value |", "|---|---|"]
        lines += [f"| {c['path']} | {c['value']:.4f} |" for c in r["candidates"]]
        lines += ["", "| members | best subset | value |", "|---|---|---|"]
        lines += [f"| {s['n']} | {', '.join(Path(p).name for p in s['paths'])} | "
                  f"{s['value']:.4f} |" for s in r["best_by_size"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="featurized mp_gap36k store")
    p.add_argument("--split", default="benchmarks/splits/mp_gap36k.json")
    p.add_argument("--gap", nargs="*", default=[], help="band-gap regressor runs/checkpoints")
    p.add_argument("--metal", nargs="*", default=[], help="metal classifier runs/checkpoints")
    p.add_argument("--n-gap", type=int, default=5, help="largest regressor subset")
    p.add_argument("--n-metal", type=int, default=3, help="largest classifier subset")
    p.add_argument("--max-z", type=int, default=85)
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--max-subsets", type=int, default=5000,
                   help="exhaustive search up to this many subsets of one size, else greedy")
    p.add_argument("--out", required=True, help="directory for choice.json and choice.md")
    args = p.parse_args(argv)
    if not args.gap and not args.metal:
        p.error("give --gap and/or --metal candidates")
    if min(args.n_gap, args.n_metal) < 1:
        p.error("--n-gap / --n-metal: expected >= 1")
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from evaluate_screening import test_batch  # the split-part loader of the evaluation

    torch.set_num_threads(1)
    batch, dropped = test_batch(args.store, args.split, args.max_z, "val")
    result = choose(batch, args.gap, args.metal, args.n_gap, args.n_metal,
                    tta=not args.no_tta, max_subsets=args.max_subsets)
    result.update(dropped_z_above_max=dropped,
                  command="python scripts/choose_members.py " + " ".join(
                      argv if argv is not None else sys.argv[1:]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "choice.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "choice.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
