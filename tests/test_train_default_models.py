"""scripts/train_default_models.sh: which trainings it starts, from which pretrained model.

``fastgap`` is replaced by a recorder that logs its arguments and marks each run finished;
``PYTHON=true`` skips packing and evaluation (tested elsewhere), so this runs in a second;
``JOBS=1`` runs the trainings one after another, so the calls are logged in launch order.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "train_default_models.sh"
RECORDER = """#!/bin/bash
echo "$@" >> "$(dirname "$0")/calls"
if [ "$1" = train ]; then
  prev=""; for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
  mkdir -p "$out" && touch "$out/metrics.json"
fi
"""


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    fake = tmp_path / "fastgap"
    fake.write_text(RECORDER)
    fake.chmod(0o755)
    full = {**os.environ, "WORK": str(tmp_path / "work"), "BUNDLE": str(tmp_path / "bundle"),
            "FASTGAP": str(fake), "PYTHON": "true", "DATA": "data.jsonl", "JOBS": "1",  # one at a time: calls in order
            **env}
    proc = subprocess.run(["bash", str(SCRIPT)], check=False, env=full, capture_output=True,
                          text=True, timeout=60)
    calls = tmp_path / "calls"
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [line.split() for line in lines if line.startswith("train")]


def _arg(call: list[str], flag: str) -> str | None:
    return call[call.index(flag) + 1] if flag in call else None


def test_members_start_from_the_named_pretrained_models(tmp_path: Path) -> None:
    proc, calls = _run(tmp_path, PRETRAIN_CONFIG="pre.toml", PRETRAIN_SEEDS="0 1 2",
                       SEEDS="1 2", FT_SEEDS="1 6:1 7:2", CLS_SEEDS="0",
                       CLS_CONFIG_B="att.toml", CLS_FT_SEEDS_B="0:0 1:1", FT_EPOCHS="30",
                       EPOCHS="60")
    assert proc.returncode == 0, proc.stderr
    runs = {Path(_arg(c, "--out")).name: c for c in calls}
    assert list(runs)[:3] == ["pretrain_seed0", "pretrain_seed1", "pretrain_seed2"]
    starts = {name: Path(_arg(c, "--init-from")).name if "--init-from" in c else None
              for name, c in runs.items()}
    assert starts == {
        "pretrain_seed0": None, "pretrain_seed1": None, "pretrain_seed2": None,
        "gap_ft_seed1": "pretrain_seed0", "gap_ft_seed6": "pretrain_seed1",
        "gap_ft_seed7": "pretrain_seed2", "gap_seed1": None, "gap_seed2": None,
        "metal_b_ft_seed0": "pretrain_seed0", "metal_b_ft_seed1": "pretrain_seed1",
        "metal_seed0": None,
    }
    assert _arg(runs["gap_ft_seed6"], "--seed") == "6"
    assert _arg(runs["gap_ft_seed6"], "--epochs") == "30"
    assert _arg(runs["gap_seed1"], "--epochs") == "60"
    assert _arg(runs["metal_b_ft_seed1"], "--config") == "att.toml"


def test_finished_runs_are_not_trained_again(tmp_path: Path) -> None:
    (tmp_path / "work" / "gap_seed1").mkdir(parents=True)
    (tmp_path / "work" / "gap_seed1" / "metrics.json").write_text("{}")
    proc, calls = _run(tmp_path, SEEDS="1 2", CLS_SEEDS="0")
    assert proc.returncode == 0, proc.stderr
    assert [Path(_arg(c, "--out")).name for c in calls] == ["gap_seed2", "metal_seed0"]


@pytest.mark.parametrize("env, message", [
    ({"PRETRAIN_CONFIG": "pre.toml", "PRETRAIN_SEEDS": "0 1", "FT_SEEDS": "6:3"},
     "6:3: pretrained seed 3 is not in PRETRAIN_SEEDS='0 1'"),
    ({"FT_SEEDS": "1"}, "FT_SEEDS / CLS_FT_SEEDS / CLS_FT_SEEDS_B need PRETRAIN_CONFIG"),
    ({"SEEDS": ""}, "no band-gap regressor: set SEEDS or FT_SEEDS"),
    ({"CLS_FT_SEEDS_B": "0", "PRETRAIN_CONFIG": "pre.toml"},
     "CLS_SEEDS_B / CLS_FT_SEEDS_B need CLS_CONFIG_B"),
])
def test_bad_settings_are_named(tmp_path: Path, env: dict, message: str) -> None:
    proc, _ = _run(tmp_path, **env)
    assert proc.returncode != 0
    assert message in proc.stderr
