"""scripts/choose_members.py: subset search, metrics and agreement with the screening path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastgap.features import FeaturizerConfig, featurize_structures
from fastgap.readers import read_structures
from fastgap.screening import predict_featurized

DATA = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"


@pytest.fixture(scope="module")
def choose(load_script):
    return load_script("choose_members")


def test_exhaustive_search_beats_greedy_on_cancelling_errors(choose) -> None:
    true = np.ones(4)
    scores = np.stack([true + 1.0, true - 1.0, true + 0.1])  # errors +1, -1, +0.1
    full = choose.best_subsets(scores, true, choose.mae_nonzero, 2, max_subsets=100)
    assert full[0] == {"n": 1, "members": [2], "value": pytest.approx(0.1)}
    assert full[1]["members"] == [0, 1] and full[1]["value"] == pytest.approx(0.0)
    greedy = choose.best_subsets(scores, true, choose.mae_nonzero, 2, max_subsets=1)
    assert greedy[1]["members"] == [1, 2]  # keeps the best single member, adds the best partner
    assert greedy[1]["value"] == pytest.approx(0.45)


def test_metrics(choose) -> None:
    true = np.array([0.0, 0.0, 1.5, 2.0])  # two metals
    assert choose.mae_nonzero(true, np.array([[9.0, 9.0, 1.0, 3.0]])) == pytest.approx(0.75)
    probs = np.array([[0.9, 0.5, 0.2, 0.1], [0.7, 0.5, 0.0, 0.3]])  # mean 0.8, 0.5, 0.1, 0.2
    want = -np.mean(np.log([0.8, 0.5, 0.9, 0.8]))
    assert choose.log_loss(true, probs) == pytest.approx(want)


def test_scores_agree_with_the_screening_path(choose, bundle_dir, bundle) -> None:
    batch, _ = featurize_structures(read_structures([DATA]), FeaturizerConfig())
    root = bundle_dir.parent
    result = choose.choose(batch, [root / "gap0", root / "gap1"], [root / "metal"], 2, 1)
    cols = predict_featurized(bundle, batch, tta=True, batch_size=256)
    true = batch.properties["band_gap_eV"]
    gapped = true > 0
    want = np.abs(cols["band_gap_regressor_eV"] - true)[gapped].mean()
    assert result["band_gap"]["all"] == pytest.approx(want, rel=1e-9)
    assert result["band_gap"]["best_by_size"][-1]["members"] == [0, 1]
    assert result["metal"]["candidates"][0]["value"] == pytest.approx(
        choose.log_loss(true, cols["p_metal"][None]), rel=1e-9)
    with pytest.raises(ValueError, match="expected one model predicting 'band_gap_eV'"):
        choose.choose(batch, [root / "metal"], [], 1, 1)


def test_cli_needs_candidates(choose, tmp_path) -> None:
    with pytest.raises(SystemExit):
        choose.main(["--store", str(tmp_path), "--out", str(tmp_path / "o")])
