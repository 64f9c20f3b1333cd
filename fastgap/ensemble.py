"""Model bundles for screening: several checkpoints, one card, one combination rule.

A bundle is a directory (the default one ships in ``fastgap/models/default/``)::

    card.json            bundle_format, fastgap_version, members, data, split, metrics, command
    MODEL_CARD.md        the same for people
    gap_seed0.safetensors ...   band-gap regressors (target band_gap_eV, trained on gaps > 0)
    metal_seed0.safetensors     metal / non-metal classifier(s) (target is_metal)

Each member is an ordinary `fastgap.checkpoint` file (safetensors weights + JSON metadata,
nothing unpickled). A single checkpoint or a training run directory is a bundle of one.

Combination rule (`combine`):

- ``band_gap_regressor_eV`` = mean over the regressors; ``band_gap_std_eV`` = their standard
  deviation (ddof=0, only when there are two or more: the spread of the ensemble, which does
  not include the classifier's uncertainty) times the bundle's calibration factor
  ``card["calibration"]["std_scale"]`` (1.0 when the card has none). The factor is fitted
  on the validation split (``scripts/evaluate_screening.py --calibrate``) so that 68.3 % of
  the validation errors on non-zero gaps fall within one reported std;
- ``p_metal`` = mean over the classifiers of P(band gap == 0);
- ``band_gap_eV`` = 0.0 where ``p_metal >= 0.5``. Elsewhere, with an ensemble std, it is
  the median of the predictive distribution "gap = 0 with probability p_metal, else
  Normal(band_gap_regressor_eV, band_gap_std_eV**2)", clipped at 0: the point estimate with
  the least expected absolute error under that distribution (`mixture_median`); it equals
  the regressors' mean where ``p_metal`` = 0 and moves towards 0 as ``p_metal`` grows.
  Without an ensemble std (one regressor) it is ``max(band_gap_regressor_eV, 0)``.
  Without a classifier ``p_metal`` is NaN and ``band_gap_eV`` is the clipped regression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastgap._version import __version__

BUNDLE_FORMAT = 1
CARD_NAME = "card.json"
GAP_TARGET = "band_gap_eV"
METAL_TARGET = "is_metal"
METAL_THRESHOLD = 0.5  # p_metal at or above this reports a gap of exactly 0 eV
COMBINATION_RULE = (
    "band_gap_eV = 0 if p_metal >= 0.5, else the median of (0 with probability p_metal, "
    "otherwise Normal(mean regressor, band_gap_std_eV^2)) clipped at 0 (max(mean regressor, "
    "0) without an ensemble std); band_gap_std_eV = std (ddof=0) over the regressors x the "
    "calibration factor"
)
ROLES = ("band_gap", "metal")
ROLE_TARGETS = {"band_gap": GAP_TARGET, "metal": METAL_TARGET}
CALIBRATION_COVERAGE = 0.683  # fraction of |error| <= std for a Gaussian


# a card may also list members of other properties (their targets become output columns)
CARD_ROLES = (*ROLES, "others")

# bundles shipped inside the package, by name: the accurate band-gap ensemble, a one-network
# model for fast screening (band gap and p_metal from one forward pass) and a QM9 model of
# molecular orbital energies (HOMO, LUMO, gap)
NAMED_BUNDLES = ("default", "fast", "qm9")
BUNDLE_SCRIPTS = {"default": "scripts/train_default_models.sh",
                  "fast": "scripts/train_fast_model.sh",
                  "qm9": "scripts/make_qm9_bundle.py"}
NAMED_HELP = "'default', 'fast', 'qm9'"


def default_bundle_dir(name: str = "default") -> Path:
    """Where the bundled model ``name`` (one of `NAMED_BUNDLES`) lives inside the package."""
    if name not in NAMED_BUNDLES:
        raise ValueError(f"model: expected one of {NAMED_BUNDLES}, got {name!r}")
    return Path(__file__).resolve().parent / "models" / name


@dataclass
class Member:
    """One loaded checkpoint: the model, its metadata and the column of each target."""

    path: Path
    model: Any
    meta: dict[str, Any]

    @property
    def targets(self) -> list[str]:
        return list(self.meta.get("targets", []))


@dataclass
class Bundle:
    """Loaded members by role and the card (empty for a bare checkpoint or run directory).

    Attributes:
        band_gap: regressors whose targets include ``band_gap_eV``.
        metal: classifiers whose targets include ``is_metal``.
        others: members predicting neither (their targets become plain output columns).
        k: neighbours per atom every member was trained with.
        card: the bundle's card.json; ``card["calibration"]["std_scale"]`` scales the std.
    """

    source: str
    band_gap: list[Member] = field(default_factory=list)
    metal: list[Member] = field(default_factory=list)
    others: list[Member] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    k: int = 19

    @property
    def members(self) -> list[Member]:
        """Every distinct member (a multi-target checkpoint may serve two roles)."""
        seen: dict[int, Member] = {}
        for m in (*self.band_gap, *self.metal, *self.others):
            seen.setdefault(id(m), m)
        return list(seen.values())

    @property
    def reads_nbr_indices(self) -> bool:
        """Whether some member (``rounds > 1``) reads the neighbours' atom indices."""
        return any(m.model.config.rounds > 1 for m in self.members)

    @property
    def std_scale(self) -> float:
        """Calibration factor of ``band_gap_std_eV`` (1.0 when the card has none)."""
        return float(self.card.get("calibration", {}).get("std_scale", 1.0))


def check_std_scale(value: Any, where: str = "std_scale") -> float:
    """``value`` as a float if it is a finite number > 0, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        np.isfinite(value) and value > 0
    ):
        raise ValueError(f"{where}: expected a finite number > 0, got {value!r}")
    return float(value)


def select_members(bundle: Bundle, n_gap: int) -> Bundle:
    """A bundle with only the first ``n_gap`` band-gap regressors and the first
    ``min(n_gap, classifiers)`` classifiers (0 = all members).

    Other members are kept. The card's std calibration was fitted for the whole ensemble,
    so fewer regressors drop it: with two or more ``band_gap_std_eV`` is then their raw
    spread, with one there is no std column.
    """
    if isinstance(n_gap, bool) or not isinstance(n_gap, int) or n_gap < 0:
        raise ValueError(f"members: expected an int >= 0 (0 = all), got {n_gap!r}")
    if n_gap > len(bundle.band_gap):
        raise ValueError(f"members: the bundle {bundle.source!r} has "
                         f"{len(bundle.band_gap)} band-gap regressors, got {n_gap}")
    if n_gap == 0 or (n_gap == len(bundle.band_gap) and len(bundle.metal) <= n_gap):
        return bundle
    card = bundle.card
    if n_gap < len(bundle.band_gap):
        card = {key: value for key, value in bundle.card.items() if key != "calibration"}
    return Bundle(source=bundle.source, band_gap=bundle.band_gap[:n_gap],
                  metal=bundle.metal[:n_gap], others=bundle.others, card=card, k=bundle.k)


def load_bundle(spec: str | Path = "default", *, device: str = "cpu") -> Bundle:
    """Load a bundled model by name (`NAMED_BUNDLES`), a bundle directory, a training run
    directory or one checkpoint.

    Raises FileNotFoundError when nothing is there (for a bundled name: that bundle is not
    installed) and ValueError for a bundle or checkpoint of another format version.
    """
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"model: expected {NAMED_HELP} or a path, got "
                        f"{type(spec).__name__}")
    if isinstance(spec, str) and spec in NAMED_BUNDLES:
        path = default_bundle_dir(spec)
        if not (path / CARD_NAME).is_file():
            script = BUNDLE_SCRIPTS[spec]
            raise FileNotFoundError(
                f"model: the {spec} model bundle is not installed ({path / CARD_NAME} is "
                f"missing); train it with {script} or pass --model RUN_DIR|FILE"
            )
    else:
        path = Path(spec)
    if path.is_dir() and (path / CARD_NAME).is_file():
        return _load_card_bundle(path, device)
    if path.is_dir() and (path / "best.safetensors").is_file():
        return _bundle_of([path / "best.safetensors"], str(path), {}, device)
    if path.is_file():
        return _bundle_of([path], str(path), {}, device)
    raise FileNotFoundError(
        f"model: expected {NAMED_HELP}, a bundle directory (with {CARD_NAME}), a training run "
        f"directory (with best.safetensors) or a .safetensors file, got {str(path)!r}"
    )


def _load_card_bundle(path: Path, device: str) -> Bundle:
    try:
        card = json.loads((path / CARD_NAME).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"model: {path / CARD_NAME} is not valid JSON ({exc})") from None
    found = card.get("bundle_format") if isinstance(card, dict) else None
    if found != BUNDLE_FORMAT:
        raise ValueError(
            f"model: bundle {str(path)!r} has bundle format {found!r} (written by fastgap "
            f"{card.get('fastgap_version') if isinstance(card, dict) else None}); this fastgap "
            f"{__version__} reads bundle format {BUNDLE_FORMAT}"
        )
    members = card.get("members", {})
    files = [path / name for role in CARD_ROLES for name in members.get(role, [])]
    if not files:
        raise ValueError(f"model: bundle {str(path)!r} lists no members in {CARD_NAME}")
    calibration = card.get("calibration", {})
    if not isinstance(calibration, dict) or (calibration and "std_scale" not in calibration):
        raise ValueError(f"model: {CARD_NAME} of {str(path)!r}: calibration: expected a table "
                         f"with std_scale, got {calibration!r}")
    if calibration:
        check_std_scale(calibration["std_scale"], f"model: {CARD_NAME} calibration.std_scale")
    bundle = _bundle_of(files, str(path), card, device)
    for role in ROLES:
        want = {str(path / n) for n in members.get(role, [])}
        got = {str(m.path) for m in getattr(bundle, role)}
        if not want <= got:
            bad = sorted(want - got)
            raise ValueError(
                f"model: {CARD_NAME} lists {bad} as {role} members but they do not predict "
                f"{ROLE_TARGETS[role]!r}"
            )
    return bundle


def _bundle_of(files: list[Path], source: str, card: dict[str, Any], device: str) -> Bundle:
    from fastgap.checkpoint import load_model

    bundle = Bundle(source=source, card=card)
    ks = set()
    for file in dict.fromkeys(files):
        model, meta = load_model(file, device=device)
        member = Member(file, model, meta)
        ks.add(meta.get("featurizer", {}).get("k"))
        placed = False
        for role in ROLES:
            if ROLE_TARGETS[role] in member.targets:
                getattr(bundle, role).append(member)
                placed = True
        if not placed:
            bundle.others.append(member)
    if len(ks) != 1 or None in ks:
        raise ValueError(f"model: members of {source!r} disagree on featurizer k: {sorted(map(str, ks))}")
    bundle.k = int(ks.pop())
    return bundle


def mixture_median(mean: np.ndarray, std: np.ndarray, p_metal: np.ndarray) -> np.ndarray:
    """Median of "0 with probability p_metal, else Normal(mean, std**2)", clipped at 0.

    Args:
        mean, std: (S,) float64 regression mean and standard deviation, eV (std >= 0).
        p_metal: (S,) float64 probabilities in [0, 1].

    Returns:
        (S,) float64 gaps in eV: 0 where p_metal >= 0.5; elsewhere y >= 0 with
        p_metal + (1 - p_metal) * Phi((y - mean) / std) = 1/2 when that y is positive.
    """
    from scipy.special import ndtri

    mean, std, pm = (np.asarray(a, np.float64) for a in (mean, std, p_metal))
    gapped = pm < METAL_THRESHOLD
    q = np.where(gapped, (0.5 - pm) / np.where(gapped, 1.0 - pm, 1.0), 0.5)
    y = mean + std * ndtri(q)  # q in (0, 0.5]: the quantile of the normal part
    return np.where(gapped, np.clip(y, 0.0, None), 0.0)


def combine(gap_preds: np.ndarray | None, p_metal: np.ndarray | None, n: int, *,
            std_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Apply the combination rule (module docstring) to per-member predictions.

    Args:
        gap_preds: (M, S) float64 band gaps in eV from M regressors, or None.
        p_metal: (C, S) float64 metal probabilities from C classifiers, or None.
        n: S, the number of structures.
        std_scale: calibration factor applied to the regressors' std (finite, > 0).

    Returns:
        Columns (each (S,) float64), in this order: ``band_gap_eV``, ``p_metal``,
        ``band_gap_std_eV`` (only when M >= 2), ``band_gap_regressor_eV``.
    """
    std_scale = check_std_scale(std_scale)
    pm = np.full(n, np.nan) if p_metal is None else np.asarray(p_metal, np.float64).mean(axis=0)
    std = None
    if gap_preds is None:
        reg = np.full(n, np.nan)
        gap = np.where(pm >= METAL_THRESHOLD, 0.0, np.nan)
    else:
        preds = np.asarray(gap_preds, dtype=np.float64)
        reg = preds.mean(axis=0)
        if len(preds) >= 2:
            std = preds.std(axis=0) * std_scale
        if std is not None and p_metal is not None:
            gap = mixture_median(reg, std, pm)
        else:  # NaN p_metal (no classifier) compares False: the clipped regression
            gap = np.where(pm >= METAL_THRESHOLD, 0.0, np.clip(reg, 0.0, None))
    out = {"band_gap_eV": gap, "p_metal": pm}
    if std is not None:
        out["band_gap_std_eV"] = std
    out["band_gap_regressor_eV"] = reg
    return out


def fit_std_scale(errors: np.ndarray, std: np.ndarray, *,
                  coverage: float = CALIBRATION_COVERAGE) -> float:
    """Factor s such that a fraction ``coverage`` of ``|errors| <= s * std``.

    Args:
        errors: (S,) float prediction errors (eV), e.g. ensemble mean minus DFT, on the
            validation split.
        std: (S,) float ensemble spreads (eV), > 0 where used; rows with std == 0 are
            skipped (their ratio is undefined).
        coverage: target fraction in (0, 1).

    Returns:
        s > 0, the ``coverage`` quantile of ``|errors| / std`` (linear interpolation).
    """
    errors, std = np.asarray(errors, np.float64), np.asarray(std, np.float64)
    if errors.shape != std.shape or errors.ndim != 1:
        raise ValueError(f"errors, std: expected two (S,) arrays of equal length, got shapes "
                         f"{errors.shape} and {std.shape}")
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage: expected a number in (0, 1), got {coverage!r}")
    use = np.isfinite(errors) & np.isfinite(std) & (std > 0)
    if not use.any():
        raise ValueError("std: expected some finite values > 0, got none")
    return check_std_scale(float(np.quantile(np.abs(errors[use]) / std[use], coverage)))


def within(errors: np.ndarray, std: np.ndarray, n_std: float) -> float:
    """Fraction of ``|errors| <= n_std * std`` (both (S,) float)."""
    return float((np.abs(np.asarray(errors)) <= n_std * np.asarray(std)).mean())
