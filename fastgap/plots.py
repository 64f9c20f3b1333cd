"""Training-curve and parity PNGs (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, float]], path: str | Path) -> Path:
    """Train / validation loss per epoch (``history`` rows: epoch, train_loss, val_loss)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised units)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_parity(y_true: np.ndarray, y_pred: np.ndarray, name: str, path: str | Path) -> Path:
    """Predicted vs true scatter for one regression target (NaN targets skipped)."""
    plt = _pyplot()
    keep = ~np.isnan(y_true)
    t, p = y_true[keep], y_pred[keep]
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.scatter(t, p, s=4, alpha=0.5)
    if len(t):
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        ax.set_title(f"{name}: MAE {np.abs(p - t).mean():.3g}")
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
