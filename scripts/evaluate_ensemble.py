"""Score training runs of one task alone and as an ensemble (mean prediction) on val and test.

The runs must share targets, filters and split (different seeds or starting checkpoints of
one task); the first run's config decides them, and a run whose config differs in any of
them is refused. Regression members are averaged in target units, classifiers as
probabilities. Prints a Markdown table (single runs' mean ± std beside the ensemble, TTA)
and writes the numbers to ``--out`` (JSON).

    python scripts/evaluate_ensemble.py runs/pretrain_seed0 runs/pretrain_seed1 ... \
        --store mp_gap36k.zarr --out ensemble.json

With ``--split FILE --target NAME`` the runs are applied to another dataset instead (no
training on it): their ``NAME`` output is scored on the split's val and test structures of
``--store`` (regression; structures without a value are skipped).

    python scripts/evaluate_ensemble.py runs/pretrain_seed{0,1,2,3,4} --store eform4k.zarr \
        --split benchmarks/splits/mp_eform4k.json --target formation_energy_eV_per_atom
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# what makes two runs one task: they must agree on these (seeds, init and schedule may not)
TASK_FIELDS = ("targets", "classification", "where", "target_where", "max_z", "split",
               "split_seed", "labels")


def run_config(run: Path, store: str) -> Any:
    """The run's `TrainConfig`, reading ``store`` instead of the path it was trained on."""
    from fastgap.train import TrainConfig

    path = run / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: not a training run directory (no config.json)")
    return TrainConfig(**{**json.loads(path.read_text()), "store": store})


def _split_ids(run: Path) -> dict[str, list[str]]:
    """The ids each part of the run held (its ``split.json``, written by every run)."""
    return json.loads((run / "split.json").read_text())


def check_same_task(configs: list[Any], runs: list[Path]) -> None:
    """Refuse runs that do not share targets, filters and split (ids) with the first."""
    first, first_split = configs[0].to_dict(), _split_ids(runs[0])
    for cfg, run in zip(configs[1:], runs[1:]):
        other = cfg.to_dict()
        diff = [f for f in TASK_FIELDS if other[f] != first[f]]
        diff += ["split ids"] if _split_ids(run) != first_split else []
        if diff:
            raise ValueError(f"{run}: differs from {runs[0]} in {diff}; an ensemble needs one "
                             "task (same targets, filters and split)")


def add_suite_targets(data: Any, targets: list[str]) -> None:
    """Add to ``data.properties`` the targets the store lacks that a `fastgap bench` task
    derives (e.g. ``log10_K_VRH`` from ``K_VRH_GPa``), by that task's rule."""
    from fastgap.benchmarks_suite.inputs import apply_derive
    from fastgap.benchmarks_suite.tasks import default_tasks

    rules = {d[0]: d for task in default_tasks() for d in task.derive}
    missing = [t for t in targets if t not in data.properties and t in rules]
    apply_derive(data, [rules[t] for t in missing])


def evaluate(runs: list[Path], store: str) -> dict[str, Any]:
    """{"runs": [...], "single": mean/std over runs, "ensemble": metrics, "n_runs"}."""
    from fastgap.benchmarks_suite.seeds import ensemble_metrics, summarise_runs
    from fastgap.store import Store

    configs = [run_config(r, store) for r in runs]
    check_same_task(configs, runs)
    per_run = []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        per_run.append({"val": metrics["val"], "test": metrics["test"]})
    data = Store.open(store).load()
    add_suite_targets(data, configs[0].targets)
    ensemble = ensemble_metrics(configs[0], runs, data)
    return {"runs": [str(r) for r in runs], "n_runs": len(runs), "per_run": per_run,
            "single": summarise_runs(per_run), "ensemble": ensemble}


def apply_elsewhere(runs: list[Path], store: str, split_file: Path,
                    target: str) -> dict[str, Any]:
    """Score the runs' ``target`` output on another dataset's val and test structures.

    Returns {"single": {part: [MAE per run]}, "ensemble": {part: MAE}, "n": {part: count}}
    (eV or the target's unit; mean prediction for the ensemble).
    """
    import numpy as np

    from fastgap.checkpoint import load_model
    from fastgap.data import StructureDataset
    from fastgap.inference import angle_bins_of, predict_members
    from fastgap.store import Store

    data = Store.open(store).load()
    if target not in data.properties:
        raise ValueError(f"target: the store has no {target!r}; it has "
                         f"{sorted(data.properties)}")
    models, columns = [], []
    for run in runs:
        model, meta = load_model(run / "best.safetensors")
        if target not in meta["targets"]:
            raise ValueError(f"{run}: predicts {meta['targets']}, not {target!r}")
        models.append(model)
        columns.append(meta["targets"].index(target))
    split = json.loads(split_file.read_text())
    where = {i: n for n, i in enumerate(data.ids.astype(str))}
    dataset = StructureDataset(data, angle_bins=angle_bins_of(models))
    truth = np.asarray(data.properties[target], dtype=np.float64)
    out: dict[str, Any] = {"single": {}, "ensemble": {}, "n": {}}
    for part in ("val", "test"):
        idx = np.array([where[i] for i in split[part] if i in where], dtype=np.int64)
        idx = idx[~np.isnan(truth[idx])]
        preds = np.stack([o[:, c] for o, c in zip(predict_members(models, dataset, idx),
                                                   columns)])  # (runs, n)
        y = truth[idx]
        out["single"][part] = [float(np.mean(np.abs(p - y))) for p in preds]
        out["ensemble"][part] = float(np.mean(np.abs(preds.mean(axis=0) - y)))
        out["n"][part] = len(idx)
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown: per target, the single runs' mean ± std and the ensemble (TTA)."""
    lines = ["| target | part | metric | single runs (mean ± std) | ensemble |",
             "|---|---|---|---|---|"]
    for part in ("val", "test"):
        for target, single in result["single"][part]["tta"].items():
            ens = result["ensemble"][part]["tta"][target]
            for metric in ("mae", "rmse", "r2", "accuracy", "roc_auc"):
                if metric in single:
                    s = single[metric]
                    lines.append(f"| {target} | {part} | {metric} | {s['mean']:.4f} ± "
                                 f"{s['std']:.4f} | {ens[metric]:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories")
    parser.add_argument("--store", required=True, help="the feature store the runs read")
    parser.add_argument("--out", type=Path, default=None, help="JSON with every number")
    parser.add_argument("--split", type=Path, default=None,
                        help="apply the runs to this split of --store (needs --target)")
    parser.add_argument("--target", default="", help="the output scored with --split")
    args = parser.parse_args(argv)
    if (args.split is None) != (not args.target):
        parser.error("--split and --target go together")
    if args.split is not None:
        result = apply_elsewhere(args.runs, args.store, args.split, args.target)
        for part in ("val", "test"):
            singles = ", ".join(f"{v:.4f}" for v in result["single"][part])
            print(f"{part} ({result['n'][part]}): single {singles}; "
                  f"ensemble {result['ensemble'][part]:.4f}")
    else:
        result = evaluate(args.runs, args.store)
        print(f"{result['n_runs']} runs\n\n{table(result)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
