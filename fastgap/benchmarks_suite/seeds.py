"""Several seeds of one training task: the spread of single runs and the seed ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch
    from fastgap.train import TrainConfig

PARTS = ("val", "test")
MODES = (("tta", True), ("no_tta", False))


def summarise_runs(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof 1; 0 for one run) over runs of every numeric metric.

    Args:
        per_run: each run's ``metrics.json`` ({part: {mode: {target: {metric: value}}}}).

    Returns:
        {part: {mode: {target: {metric: {"mean": float, "std": float}}}}} for val and test;
        the count ``n`` is kept as it is (the same for every run).
    """
    out: dict[str, Any] = {}
    for part in PARTS:
        out[part] = {}
        for mode, _ in MODES:
            first = per_run[0][part][mode]
            out[part][mode] = {}
            for target, metrics in first.items():
                row: dict[str, Any] = {}
                for name, value in metrics.items():
                    if name == "n" or not isinstance(value, (int, float)):
                        row[name] = value
                        continue
                    values = np.array([r[part][mode][target][name] for r in per_run], float)
                    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                    row[name] = {"mean": float(values.mean()), "std": std}
                out[part][mode][target] = row
    return out


def ensemble_metrics(config: TrainConfig, run_dirs: list[Path], featurized: FeaturizedBatch,
                     plot_dir: Path | None = None) -> dict[str, Any]:
    """Metrics of the runs' mean prediction on the val and test structures of ``config``.

    Args:
        config: the training config of the runs (targets, filters and split; one split for
            all: the seeds change the weights, not the data).
        run_dirs: run directories; each one's ``best.safetensors`` is a member.
        featurized: the data the runs were trained on (derived targets included).
        plot_dir: where the ensemble's test parity PNGs go (None = no plots).

    Returns:
        {part: {mode: {target: metrics}}} as in a run's ``metrics.json``. Regression members
        are averaged in target units, classifiers as probabilities.
    """
    from fastgap.checkpoint import load_model
    from fastgap.training.run import evaluate_models, prepare_data

    dataset, split = prepare_data(config, featurized)
    models = [load_model(Path(d) / "best.safetensors")[0] for d in run_dirs]
    return evaluate_models(models, dataset, split, config, parts=PARTS, plot_dir=plot_dir)
