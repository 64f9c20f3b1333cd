"""Evaluation metrics on NumPy arrays; NaN targets are ignored."""

from __future__ import annotations

import numpy as np


def _valid(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_pred: expected the shape of y_true {y_true.shape}, got {y_pred.shape}"
        )
    keep = ~np.isnan(y_true)
    return y_true[keep], y_pred[keep]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R2 and count over the entries where ``y_true`` is not NaN."""
    t, p = _valid(y_true, y_pred)
    if len(t) == 0:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "r2": float("nan")}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "n": len(t),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": r2,
    }


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties count one half); NaN if one class."""
    t, s = _valid(y_true, score)
    pos, neg = s[t > 0.5], s[t <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[t > 0.5].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def classification_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Accuracy (threshold 0.5), ROC-AUC and count over non-NaN targets."""
    t, p = _valid(y_true, prob)
    if len(t) == 0:
        return {"n": 0, "accuracy": float("nan"), "roc_auc": float("nan")}
    return {
        "n": len(t),
        "accuracy": float(((p > 0.5) == (t > 0.5)).mean()),
        "roc_auc": roc_auc(t, p),
    }


def target_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, names: list[str], is_class: list[bool]
) -> dict[str, dict[str, float]]:
    """Per-target metrics for (S, T) arrays."""
    return {
        name: (classification_metrics if cls else regression_metrics)(y_true[:, j], y_pred[:, j])
        for j, (name, cls) in enumerate(zip(names, is_class))
    }
