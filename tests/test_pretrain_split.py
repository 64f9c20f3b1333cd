"""scripts/make_pretrain_split.py: held-out structures leave the pretraining split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NACL = {"lattice": [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]],
        "species": ["Na"] * 4 + ["Cl"] * 4,
        "frac_coords": [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                        [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]]}
NACL_PRIM = {"lattice": [[0, 2.83, 2.83], [2.83, 0, 2.83], [2.83, 2.83, 0]],
             "species": ["Na", "Cl"], "frac_coords": [[0, 0, 0], [.5, .5, .5]]}
SI = {"lattice": [[0, 2.73, 2.73], [2.73, 0, 2.73], [2.73, 2.73, 0]],
      "species": ["Si", "Si"], "frac_coords": [[0, 0, 0], [.25, .25, .25]]}


def _write(path: Path, records: dict[str, dict]) -> Path:
    path.write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in records.items()))
    return path


def test_removes_by_id_and_by_structure(tmp_path: Path, monkeypatch, load_script) -> None:
    base = {"train": ["nacl-conv", "si", "shared"], "val": ["nacl-prim"], "test": ["t"]}
    task = {"train": ["si-task"], "val": [], "test": ["nacl-task", "shared"]}
    base_data = _write(tmp_path / "base.jsonl", {"nacl-conv": NACL, "si": SI, "shared": SI,
                                                 "nacl-prim": NACL_PRIM, "t": SI})
    task_data = _write(tmp_path / "task.jsonl", {"si-task": SI, "nacl-task": NACL_PRIM,
                                                 "shared": SI})
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "task.json").write_text(json.dumps(task))
    out = tmp_path / "pre.json"
    monkeypatch.setattr(sys, "argv", [
        "x", str(tmp_path / "base.json"), str(out), "--exclude", str(tmp_path / "task.json"),
        "--base-data", str(base_data), "--exclude-data", str(task_data)])
    load_script("make_pretrain_split").main()
    split = json.loads(out.read_text())
    # "si" equals "shared" (a task test structure): removed too; the test part is untouched
    assert split["train"] == [] and split["val"] == [] and split["test"] == ["t"]
    assert split["removed"] == {"train": {"by_id": 1, "by_structure": 2},
                                "val": {"by_id": 0, "by_structure": 1}}
    assert split["structure_matches"]["nacl-conv"] == "nacl-task"


def test_ids_only_and_bad_split(load_script) -> None:
    script = load_script("make_pretrain_split")
    base = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    split = script.pretrain_split(base, [{"train": ["a"], "val": ["c"], "test": ["b"]}])
    assert (split["train"], split["val"], split["test"]) == (["a"], [], ["d"])
    with pytest.raises(ValueError, match=r"exclude\[0\]: expected keys train, val, test"):
        script.pretrain_split(base, [{"train": []}])
