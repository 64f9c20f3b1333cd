"""Evaluate a screening bundle on the fixed mp_gap36k test split.

Reports the metal classifier's ROC-AUC and accuracy, the regression MAE on non-zero gaps,
the screening MAE over all test structures (metals included, combination rule applied) and
the calibration of the ensemble std (fraction of regression errors within 1 and 2 std on
non-zero gaps). Writes ``metrics.json`` and ``parity.png`` into ``--out``; with ``--card``
the metrics go into the bundle's card.json and MODEL_CARD.md; with ``--results`` into the
screening-accuracy block of benchmarks/RESULTS.md.

``--calibrate`` first fits the factor of ``band_gap_std_eV`` on the VALIDATION split (the
0.683 quantile of |error| / raw std over non-zero gaps, `fastgap.ensemble.fit_std_scale`),
stores it in the card (with ``--card``) and reports the test-split calibration before
(raw spread) and after. ``--precision bf16`` / ``--members N`` evaluate those options;
``--part val`` evaluates the validation split instead (to choose between bundles).

    python scripts/evaluate_screening.py --model fastgap/models/default \
        --store runs/default_models/store --split benchmarks/splits/mp_gap36k.json \
        --out runs/default_models/evaluation --card --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BLOCK = "screening-accuracy"


def test_batch(store_path: str, split_path: str, max_z: int, part: str = "test"):
    """The ``part`` split structures of the store with every element Z <= ``max_z``."""
    from fastgap.store import Store

    store = Store.open(store_path)
    test = set(json.loads(Path(split_path).read_text())[part])
    idx = np.flatnonzero([i in test for i in store.ids])
    batch = store.load(idx)
    zmax = np.maximum.reduceat(batch.numbers.astype(np.int64), batch.atom_ptr[:-1])
    return batch.select(zmax <= max_z), int((zmax > max_z).sum())


def screening_metrics(true: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics of predicted columns against DFT gaps ``true`` (S,) in eV."""
    from fastgap.metrics import classification_metrics, regression_metrics

    gapped = true > 0
    out: dict[str, float] = {"n_test": len(true), "n_nonzero": int(gapped.sum())}
    if np.isfinite(cols["p_metal"]).all():
        cls = classification_metrics((~gapped).astype(float), cols["p_metal"])
        out.update(metal_roc_auc=cls["roc_auc"], metal_accuracy=cls["accuracy"])
    reg = cols["band_gap_regressor_eV"]
    out["regression_mae_nonzero_eV"] = regression_metrics(true[gapped], reg[gapped])["mae"]
    out["screening_mae_all_eV"] = regression_metrics(true, cols["band_gap_eV"])["mae"]
    out["screening_mae_nonzero_eV"] = float(np.abs(cols["band_gap_eV"] - true)[gapped].mean())
    out["screening_mae_metals_eV"] = float(np.abs(cols["band_gap_eV"][~gapped]).mean())
    if "band_gap_std_eV" in cols:
        err = np.abs(reg - true)[gapped]
        std = cols["band_gap_std_eV"][gapped]
        out["within_1std"] = float((err <= std).mean())
        out["within_2std"] = float((err <= 2 * std).mean())
        out["mean_std_eV"] = float(std.mean())
    return out


def plot(true: np.ndarray, cols: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    sc = ax.scatter(true, cols["band_gap_eV"], s=3, c=cols["p_metal"], cmap="coolwarm",
                    vmin=0, vmax=1, alpha=0.6)
    hi = float(max(true.max(), cols["band_gap_eV"].max()))
    ax.plot([0, hi], [0, hi], color="k", lw=0.8)
    ax.set_xlabel("DFT band gap (eV)")
    ax.set_ylabel("predicted band gap (eV)")
    ax.set_title(f"test split: MAE {np.abs(cols['band_gap_eV'] - true).mean():.3f} eV")
    fig.colorbar(sc, ax=ax, label="p_metal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(metrics: dict[str, float], card: dict, command: str) -> str:
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items()]
    return "\n".join([
        (f"Bundle: {card.get('name', '?')}, trained {card.get('date', '?')} with "
        f"`{card.get('command', '?')}`; data {card.get('data', {}).get('path', '?')}, split "
        f"{card.get('split', {}).get('path', '?')}."), "", f"Command: `{command}`", "",
        "| metric (test split) | value |", "|---|---|", *rows,
    ])


def update_block(path: Path, key: str, text: str, heading: str = "## Screening") -> None:
    """Replace the ``<!-- key -->`` block under ``heading`` (created if missing)."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    body = path.read_text() if path.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in body:
        head, rest = body.split(start, 1)
        body = head + block + rest.split(end, 1)[1]
    elif heading in body:
        head, rest = body.split(heading, 1)
        body = head + heading + "\n\n" + block + "\n" + rest
    else:
        body = body.rstrip() + f"\n\n{heading}\n\n{block}\n"
    path.write_text(body)


def calibrate(bundle, args: argparse.Namespace) -> dict:
    """Fit the std factor on the validation split (raw ensemble spread, non-zero gaps)."""
    from fastgap.ensemble import CALIBRATION_COVERAGE, fit_std_scale, within
    from fastgap.screening import predict_featurized

    val, _ = test_batch(args.store, args.split, args.max_z, "val")
    cols = predict_featurized(bundle, val, tta=not args.no_tta, batch_size=256,
                              precision=args.precision, calibrated=False)
    true = val.properties["band_gap_eV"]
    gapped = true > 0
    err = (cols["band_gap_regressor_eV"] - true)[gapped]
    std = cols["band_gap_std_eV"][gapped]
    scale = fit_std_scale(err, std)
    return {
        "std_scale": scale,
        "method": f"{CALIBRATION_COVERAGE} quantile of |error| / raw ensemble std",
        "split": "val", "n_val_nonzero": int(gapped.sum()),
        "val_within_1std_raw": within(err, std, 1), "val_within_2std_raw": within(err, std, 2),
        "val_within_1std": within(err, scale * std, 1),
        "val_within_2std": within(err, scale * std, 2),
        "gaussian_ml_scale": float(np.sqrt(np.mean((err / std) ** 2))),
        "command": "python scripts/evaluate_screening.py " + " ".join(args.argv),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--store", required=True, help="featurized mp_gap36k store")
    p.add_argument("--split", default="benchmarks/splits/mp_gap36k.json")
    p.add_argument("--out", required=True, help="directory for metrics.json and parity.png")
    p.add_argument("--max-z", type=int, default=85)
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8", "auto"])
    p.add_argument("--members", type=int, default=0, help="first N regressors (0 = all)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the std factor on the validation split first")
    p.add_argument("--card", action="store_true", help="write metrics into the bundle's card")
    p.add_argument("--results", default=None, help="RESULTS.md to update")
    p.add_argument("--part", default="test", choices=["test", "val"],
                   help="split part to evaluate (val: for choosing between bundles)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else __import__("sys").argv[1:])
    if args.card and (args.members or args.precision != "fp32"):
        p.error("--card: the card describes the full fp32 bundle; drop --members/--precision")
    if args.part != "test" and (args.card or args.results):
        p.error("--card / --results report the test split; drop them with --part val")
    from fastgap.bundle_card import write_model_card
    from fastgap.ensemble import load_bundle, select_members
    from fastgap.screening import predict_featurized

    bundle = select_members(load_bundle(args.model), args.members)
    calibration = None
    if args.calibrate:
        if len(bundle.band_gap) < 2:
            p.error("--calibrate: needs two or more band-gap regressors (an ensemble std)")
        calibration = calibrate(bundle, args)
        bundle.card = {**bundle.card, "calibration": calibration}
    batch, dropped = test_batch(args.store, args.split, args.max_z, args.part)
    true = batch.properties["band_gap_eV"]
    cols = predict_featurized(bundle, batch, tta=not args.no_tta, batch_size=256,
                              precision=args.precision)
    metrics = screening_metrics(true, cols)
    if "band_gap_std_eV" in cols:
        raw = predict_featurized(bundle, batch, tta=not args.no_tta, batch_size=256,
                                 precision=args.precision, calibrated=False)
        before = screening_metrics(true, raw)
        metrics.update({f"{k}_raw": before[k] for k in ("within_1std", "within_2std",
                                                         "mean_std_eV")})
        metrics["std_scale"] = bundle.std_scale
    metrics["dropped_z_above_max"] = dropped
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if calibration:
        (out / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    plot(true, cols, out / "parity.png")
    print(json.dumps({"calibration": calibration, f"{args.part}_split": metrics}, indent=2))
    if args.card:
        write_model_card(Path(bundle.source), {"test_split": metrics, "tta": not args.no_tta},
                         calibration)
    if args.results:
        command = "python scripts/evaluate_screening.py " + " ".join(args.argv)
        update_block(Path(args.results), BLOCK, markdown(metrics, bundle.card, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
