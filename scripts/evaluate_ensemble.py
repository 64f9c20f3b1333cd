"""Score training runs of one task alone and as an ensemble (mean prediction) on val and test.

The runs must share targets, filters and split (different seeds or starting checkpoints of
one task); the first run's config decides them, and a run whose config differs in any of
them is refused. Regression members are averaged in target units, classifiers as
probabilities. Prints a Markdown table (single runs' mean ± std beside the ensemble, TTA)
and writes the numbers to ``--out`` (JSON).

    python scripts/evaluate_ensemble.py runs/pretrain_seed0 runs/pretrain_seed1 ... \
        --store mp_gap36k.zarr --out ensemble.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# what makes two runs one task: they must agree on these (seeds, init and schedule may not)
TASK_FIELDS = ("targets", "classification", "where", "max_z", "split", "split_seed",
               "labels")


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
    ensemble = ensemble_metrics(configs[0], runs, data)
    return {"runs": [str(r) for r in runs], "n_runs": len(runs), "per_run": per_run,
            "single": summarise_runs(per_run), "ensemble": ensemble}


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
    args = parser.parse_args(argv)
    result = evaluate(args.runs, args.store)
    print(f"{result['n_runs']} runs\n\n{table(result)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
