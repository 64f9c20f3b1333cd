"""scripts/train_fast_model.sh end to end on 100 structures: featurize, fine-tune the shipped
pretrained model for one epoch, pack one network in both roles, evaluate into the card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastgap.ensemble import load_bundle

REPO = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"


def test_fast_model_script(tmp_path: Path) -> None:
    ids = [json.loads(line)["id"] for line in DATA.read_text().splitlines()]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:70], "val": ids[70:85], "test": ids[85:]}))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "DATA": str(DATA), "SPLIT": str(split), "WORK": str(tmp_path / "w"),
           "BUNDLE": str(tmp_path / "fast"), "EPOCHS": "1", "PYTHON": sys.executable,
           "FASTGAP": str(bindir / "fastgap"), "PATH": f"{bindir}:{os.environ['PATH']}"}
    script = str(REPO / "scripts" / "train_fast_model.sh")
    proc = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((tmp_path / "fast" / "card.json").read_text())
    assert card["members"] == {"band_gap": ["gap_0.safetensors"], "metal": ["gap_0.safetensors"]}
    assert card["provenance"]["gap_0.safetensors"]["init_from"]["shipped"]
    assert card["metrics"]["test_split"]["n_test"] == 15
    assert card["command"].endswith("scripts/train_fast_model.sh")
    text = (tmp_path / "fast" / "MODEL_CARD.md").read_text()
    assert "The regressors never saw metals." in text
    bundle = load_bundle(tmp_path / "fast")
    assert len(bundle.members) == 1
    assert bundle.members[0].targets == ["band_gap_eV", "is_metal"]
    # a finished run is not trained again: the second call only packs and evaluates
    mtime = (tmp_path / "w" / "fast_seed0" / "best.safetensors").stat().st_mtime_ns
    again = subprocess.run(["bash", script], env=env, capture_output=True, text=True, check=False,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "w" / "fast_seed0" / "best.safetensors").stat().st_mtime_ns == mtime
