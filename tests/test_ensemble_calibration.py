"""Calibration of band_gap_std_eV: fitting, storing in the card, applying, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from fastgap.bundle_card import write_model_card
from fastgap.ensemble import (
    CARD_NAME,
    check_std_scale,
    combine,
    fit_std_scale,
    load_bundle,
    mixture_median,
    select_members,
    within,
)
from fastgap.screening import PredictConfig, predict

DATA = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"
CFG = PredictConfig(workers=0, progress=False)


def _helpers():
    spec = importlib.util.spec_from_file_location(
        "fastgap_test_inference", Path(__file__).with_name("test_inference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _helpers().make_bundle(tmp_path_factory.mktemp("calibration"))


def test_fit_std_scale_recovers_an_underestimated_spread() -> None:
    rng = np.random.default_rng(0)
    std = rng.uniform(0.1, 1.0, 20000)
    errors = rng.normal(0.0, 3.0 * std)  # the true spread is 3x the reported one
    scale = fit_std_scale(errors, std)
    assert scale == pytest.approx(3.0, rel=0.03)
    assert within(errors, scale * std, 1) == pytest.approx(0.683, abs=1e-3)
    assert within(errors, std, 1) < 0.3


def test_fit_std_scale_skips_zero_spread_and_checks_inputs() -> None:
    errors, std = np.array([1.0, 2.0, 5.0]), np.array([1.0, 1.0, 0.0])
    assert fit_std_scale(errors, std, coverage=0.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="errors, std: expected two"):
        fit_std_scale(errors, std[:2])
    with pytest.raises(ValueError, match=r"coverage: expected a number in \(0, 1\)"):
        fit_std_scale(errors, std, coverage=1.0)
    with pytest.raises(ValueError, match="std: expected some finite values > 0"):
        fit_std_scale(errors, np.zeros(3))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "2", True, None])
def test_check_std_scale_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="std_scale: expected a finite number > 0"):
        check_std_scale(bad)


def test_combine_scales_only_the_std() -> None:
    preds = np.array([[1.0, 2.0], [3.0, 2.5]])
    raw = combine(preds, None, 2)
    scaled = combine(preds, None, 2, std_scale=2.5)
    np.testing.assert_allclose(scaled["band_gap_std_eV"], 2.5 * raw["band_gap_std_eV"])
    np.testing.assert_array_equal(scaled["band_gap_eV"], raw["band_gap_eV"])
    with pytest.raises(ValueError, match="std_scale: expected a finite number > 0"):
        combine(preds, None, 2, std_scale=0)


def test_calibration_is_stored_and_applied(bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    calibrated = Path(shutil.copytree(bundle_dir, tmp_path / "calibrated"))
    write_model_card(calibrated, calibration={"std_scale": 2.5, "method": "test", "split": "val"})
    card = json.loads((calibrated / CARD_NAME).read_text())
    assert card["calibration"]["std_scale"] == 2.5
    assert "x 2.5" in (calibrated / "MODEL_CARD.md").read_text()
    assert load_bundle(bundle_dir).std_scale == 1.0
    assert load_bundle(calibrated).std_scale == 2.5
    raw = predict(DATA, bundle_dir, CFG)
    out = predict(DATA, calibrated, CFG)
    np.testing.assert_allclose(out["band_gap_std_eV"], 2.5 * raw["band_gap_std_eV"], rtol=1e-12)
    np.testing.assert_array_equal(out["band_gap_regressor_eV"], raw["band_gap_regressor_eV"])
    # the reported gap is the mixture median with the calibrated std
    want = mixture_median(out["band_gap_regressor_eV"].to_numpy(),
                          out["band_gap_std_eV"].to_numpy(), out["p_metal"].to_numpy())
    np.testing.assert_allclose(out["band_gap_eV"], want, rtol=1e-12, atol=1e-12)
    off = predict(DATA, calibrated, PredictConfig(workers=0, progress=False, calibrated=False))
    np.testing.assert_array_equal(off["band_gap_std_eV"], raw["band_gap_std_eV"])
    # a subset of the members reports the raw spread: the factor was fitted for all of them
    assert select_members(load_bundle(calibrated), 2).std_scale == 1.0


def test_bad_calibration_in_card_refused(bundle_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(bundle_dir, tmp_path / "broken"))
    card = json.loads((broken / CARD_NAME).read_text())
    for value, message in (({"method": "x"}, "calibration: expected a table with std_scale"),
                           ({"std_scale": -1}, "calibration.std_scale: expected a finite")):
        (broken / CARD_NAME).write_text(json.dumps({**card, "calibration": value}))
        with pytest.raises(ValueError, match=message):
            load_bundle(broken)
    with pytest.raises(ValueError, match="calibration.std_scale: expected a finite number"):
        write_model_card(broken, calibration={"method": "no factor"})


def test_default_bundle_ships_a_calibrated_std() -> None:
    card = load_bundle("default").card
    assert card["calibration"]["split"] == "val"
    assert card["calibration"]["std_scale"] > 1.0  # the raw seed spread is overconfident
    test = card["metrics"]["test_split"]
    assert test["within_1std"] > test["within_1std_raw"]


def test_evaluate_screening_fits_on_val_and_writes_the_card(bundle_dir: Path, tmp_path: Path,
                                                             load_script) -> None:
    import shutil

    from fastgap.featurize import FeaturizeConfig, featurize
    from fastgap.store import Store

    store = tmp_path / "store"
    featurize([DATA], store, FeaturizeConfig(workers=0, progress=False))
    ids = [str(i) for i in Store.open(store).ids]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": ids[::2], "test": ids[1::2]}))
    model = Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))
    base = ["--model", str(model), "--store", str(store), "--split", str(split)]
    script = load_script("evaluate_screening")
    assert script.main([*base, "--out", str(tmp_path / "eval"), "--calibrate", "--card"]) == 0
    card = json.loads((model / CARD_NAME).read_text())
    cal, test = card["calibration"], card["metrics"]["test_split"]
    assert cal["split"] == "val" and cal["val_within_1std"] == pytest.approx(0.683, abs=0.1)
    assert test["std_scale"] == cal["std_scale"] == load_bundle(model).std_scale
    assert test["mean_std_eV"] == pytest.approx(cal["std_scale"] * test["mean_std_eV_raw"])
    with pytest.raises(SystemExit):  # the card describes the full fp32 bundle only
        script.main([*base, "--out", str(tmp_path / "e2"), "--members", "1", "--card"])
    with pytest.raises(SystemExit):  # one regressor has no std to calibrate
        script.main([*base, "--out", str(tmp_path / "e3"), "--members", "1", "--calibrate"])
