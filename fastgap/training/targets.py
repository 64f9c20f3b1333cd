"""Which structures and targets a run uses: filters, derived targets, splits, loss.

``where`` grammar (parsed, never evaluated): ``name op number [and name op number ...]``
with ``op`` one of ``< <= > >= == !=``; ``name`` is a property or a derived target.
Missing values (NaN) fail every comparison, so they are filtered out.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_CLAUSE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|!=|<|>)\s*"
    r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
DERIVED_CLASS_TARGETS = {"is_metal": "band_gap_eV"}  # derived name -> source property


def parse_where(text: str) -> list[tuple[str, str, float]]:
    """``"band_gap_eV > 0 and x <= 3"`` -> ``[("band_gap_eV", ">", 0.0), ("x", "<=", 3.0)]``."""
    if not isinstance(text, str):
        raise TypeError(f"where: expected a string, got {type(text).__name__}")
    if not text.strip():
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _CLAUSE.match(part)
        if match is None:
            raise ValueError(
                f"where: expected 'name op number [and ...]' with op in {sorted(OPS)}, "
                f"got clause {part!r}"
            )
        clauses.append((match.group(1), match.group(2), float(match.group(3))))
    return clauses


def derived_targets(properties: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derived 0/1 targets: ``is_metal`` = (band_gap_eV == 0), NaN where the gap is NaN."""
    out = {}
    for name, source in DERIVED_CLASS_TARGETS.items():
        if source in properties:
            gap = np.asarray(properties[source], dtype=np.float64)
            out[name] = np.where(np.isnan(gap), np.nan, (gap == 0).astype(np.float64))
    return out


def select_structures(
    columns: dict[str, np.ndarray], where: str, numbers_max: np.ndarray, max_z: int | None
) -> np.ndarray:
    """Boolean (S,) mask of structures passing ``where`` and ``max_z``.

    ``columns`` maps property / derived names to (S,) float64; ``numbers_max`` is each
    structure's largest atomic number.
    """
    keep = np.ones(len(numbers_max), dtype=bool)
    for name, op, value in parse_where(where):
        if name not in columns:
            raise ValueError(f"where: unknown property {name!r}; available: {sorted(columns)}")
        with np.errstate(invalid="ignore"):
            keep &= OPS[op](columns[name], value) & ~np.isnan(columns[name])
    if max_z is not None:
        if not isinstance(max_z, int) or not 1 <= max_z <= 118:
            raise ValueError(f"max_z: expected an integer in 1..118 or None, got {max_z!r}")
        keep &= numbers_max <= max_z
    return keep


def make_split(
    ids: np.ndarray,
    candidates: np.ndarray,
    *,
    fractions: Sequence[float],
    seed: int,
    split_file: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Split the structure indices ``candidates`` into train / val / test index arrays.

    With ``split_file`` (JSON with ``train``, ``val``, ``test`` id lists) the file decides
    and candidates it does not list are left out; otherwise ``candidates`` are shuffled with
    ``np.random.default_rng(seed)`` and cut by ``fractions``.
    """
    if split_file:
        data = json.loads(Path(split_file).read_text())
        missing = {"train", "val", "test"} - set(data)
        if missing:
            raise ValueError(f"split_file: expected keys train, val, test; missing {sorted(missing)}")
        pos = {str(i): n for n, i in enumerate(ids)}
        allowed = np.zeros(len(ids), dtype=bool)
        allowed[candidates] = True
        out = {}
        for part in ("train", "val", "test"):
            idx = np.array([pos[i] for i in data[part] if i in pos], dtype=np.int64)
            out[part] = np.sort(idx[allowed[idx]])
        return out
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split: expected three non-negative fractions summing to 1, got {fr}")
    perm = np.asarray(candidates)[np.random.default_rng(seed).permutation(len(candidates))]
    n_train = round(fr[0] * len(perm))
    n_val = round(fr[1] * len(perm))
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return {k: np.sort(p) for k, p in zip(("train", "val", "test"), parts)}


def fit_normaliser(table: np.ndarray, is_class: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each regression column of the (S_train, T) table (NaN ignored).

    Classification columns get (0, 1). A column with no spread gets std 1.
    """
    mean = np.zeros(table.shape[1])
    std = np.ones(table.shape[1])
    for j, cls in enumerate(is_class):
        col = table[:, j][~np.isnan(table[:, j])]
        if cls or len(col) == 0:
            continue
        mean[j] = col.mean()
        std[j] = col.std() if col.std() > 1e-12 else 1.0
    return mean, std


def masked_loss(
    out: torch.Tensor, targets: torch.Tensor, model: torch.nn.Module
) -> torch.Tensor:
    """Mean over targets of each target's mean loss over its non-NaN entries.

    ``out`` (B, T) normalised outputs / logits; ``targets`` (B, T) original units, NaN =
    missing. L1 on normalised values for regression, BCE-with-logits for classification.
    """
    mask = ~torch.isnan(targets)
    mean = model.target_mean.to(out.dtype)
    std = model.target_std.to(out.dtype)
    is_class = model.target_is_class
    t = torch.where(mask, targets.to(out.dtype), torch.zeros_like(out))
    t_norm = torch.where(is_class, t, (t - mean) / std)
    l1 = (out - t_norm).abs()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, t, reduction="none")
    per = torch.where(is_class, bce, l1) * mask
    count = mask.sum(dim=0)
    per_target = per.sum(dim=0) / count.clamp_min(1)
    present = count > 0
    return (per_target * present).sum() / present.sum().clamp_min(1)
