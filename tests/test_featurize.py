"""The bulk pipeline: store contents, rejects CSV, accounting, append, crash and resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import fastgap.store
from fastgap.cli import main
from fastgap.features import FeaturizerConfig, featurize_structures
from fastgap.featurize import FeaturizeConfig, featurize, read_rejects
from fastgap.readers import read_structures
from fastgap.store import Store

DATA = Path(__file__).parent / "data" / "featurize"
FEAT = FeaturizerConfig(k=19, backend="reference")


def config(**kw: object) -> FeaturizeConfig:
    kw = {"featurizer": FEAT, "workers": 0, "chunk_size": 3, "flush_atoms": 10,
          "progress": False, **kw}
    return FeaturizeConfig(**kw)  # type: ignore[arg-type]


@pytest.fixture
def inputs(tmp_path: Path) -> list[Path]:
    """mp12 plus one overlapping structure, one unknown element and one duplicate id."""
    lines = (DATA / "mp12.jsonl").read_text().splitlines()
    bad = {"id": "overlap", "lattice": np.eye(3).tolist(), "species": ["Na", "Cl"],
           "frac_coords": [[0, 0, 0], [0.1, 0, 0]]}
    unknown = json.loads(lines[0]) | {"id": "unknown", "species": ["Xx", "Te"]}
    dup = json.loads(lines[3])
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join([*lines[:6], json.dumps(bad), json.dumps(unknown)]) + "\n")
    second = tmp_path / "b.jsonl"
    second.write_text("\n".join([*lines[6:], json.dumps(dup)]) + "\n")
    return [first, second]


def rejects_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def expected() -> object:
    batch, _ = featurize_structures(list(read_structures([DATA / "mp12.jsonl"])), FEAT)
    return batch


def check_complete(out: Path) -> None:
    store = Store.open(out)
    want = expected()
    assert list(store.ids) == list(want.ids)  # input order, no duplicates, no losses
    got = store.load()
    np.testing.assert_array_equal(got.nbr_numbers, want.nbr_numbers)
    np.testing.assert_array_equal(got.nbr_distances, want.nbr_distances)
    np.testing.assert_array_equal(got.properties["band_gap_eV"], want.properties["band_gap_eV"])


def test_store_rejects_and_accounting(tmp_path: Path, inputs: list[Path]) -> None:
    out = tmp_path / "s.zarr"
    summary = featurize(inputs, out, config())
    assert (summary.inputs, summary.written, summary.rejected, summary.skipped) == (15, 12, 3, 0)
    check_complete(out)
    rows = rejects_rows(out / "rejects.csv")
    assert rows[0] == ["id", "source", "reason"]
    reasons = {r[0]: r[2] for r in rows[1:]}
    assert sorted(reasons) == ["mp-10010", "overlap", "unknown"]
    assert "closer than" in reasons["overlap"] and "duplicate id" in reasons["mp-10010"]
    assert "Xx" in reasons["unknown"]
    assert rows[1][1].startswith(str(inputs[0]))
    again = featurize(inputs, out, config())  # a finished run re-run: all skipped
    assert (again.inputs, again.written, again.rejected, again.skipped) == (15, 0, 0, 15)
    assert len(rejects_rows(out / "rejects.csv")) == 4


def test_worker_processes(tmp_path: Path, inputs: list[Path]) -> None:
    summary = featurize(inputs, tmp_path / "s.zarr", config(workers=2, chunk_size=4))
    assert (summary.written, summary.rejected) == (12, 3)
    check_complete(tmp_path / "s.zarr")


def test_append_second_input_later(tmp_path: Path, inputs: list[Path]) -> None:
    out = tmp_path / "s.zarr"
    first = featurize(inputs[:1], out, config())
    second = featurize(inputs, out, config())
    assert (first.written, first.rejected) == (6, 2)
    assert (second.written, second.rejected, second.skipped) == (6, 1, 8)
    check_complete(out)


@pytest.mark.parametrize("fail_after", [1, 2, 5, 8])
def test_resume_after_crash_mid_append(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch, fail_after: int
) -> None:
    """Die inside an append (some arrays written, the commit not), then run again."""
    out = tmp_path / "s.zarr"
    real_write, calls = fastgap.store._write, [0]

    def dying_write(*args: object) -> None:
        calls[0] += 1
        if calls[0] > fail_after * 5:
            raise KeyboardInterrupt("simulated kill")
        real_write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fastgap.store, "_write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        featurize(inputs, out, config())
    monkeypatch.undo()
    partial = Store.open(out).n_structures
    assert partial < 12
    summary = featurize(inputs, out, config())
    assert summary.written + summary.rejected + summary.skipped == summary.inputs == 15
    assert summary.written == 12 - partial
    check_complete(out)
    rejected = [r[0] for r in rejects_rows(out / "rejects.csv")[1:]]
    assert sorted(rejected) == ["mp-10010", "overlap", "unknown"]


def test_torn_rejects_line_is_repaired(tmp_path: Path, inputs: list[Path]) -> None:
    out = tmp_path / "s.zarr"
    featurize(inputs[:1], out, config())
    path = out / "rejects.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - 7])  # the last record cut by a crash
    assert read_rejects(path) == {("overlap", f"{inputs[0]}:line 7")}
    summary = featurize(inputs, out, config())
    assert summary.rejected == 2  # 'unknown' again, plus the duplicate in b.jsonl
    check_complete(out)
    assert len(rejects_rows(path)) == 4


def test_custom_rejects_path_and_cli(tmp_path: Path, inputs: list[Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, rej = tmp_path / "s.zarr", tmp_path / "r" / "bad.csv"
    code = main(["featurize", *map(str, inputs), "--out", str(out), "--workers", "0",
                 "--backend", "reference", "--rejects", str(rej), "--chunk-size", "5",
                 "--no-progress"])
    assert code == 0
    assert "written 12, rejected 3, skipped (already done) 0" in capsys.readouterr().out
    assert len(rejects_rows(rej)) == 4
    assert main(["featurize", str(inputs[0]), "--out", str(out), "--k", "7"]) == 2
    assert "featurizer: the store" in capsys.readouterr().err
    check_complete(out)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="workers: expected an int >= 0"):
        FeaturizeConfig(workers=-1)
    with pytest.raises(ValueError, match="chunk_size: expected an int >= 1"):
        FeaturizeConfig(chunk_size=0)
    with pytest.raises(ValueError, match="flush_atoms: expected an int >= 1"):
        FeaturizeConfig(flush_atoms=True)
    with pytest.raises(TypeError, match="featurizer: expected FeaturizerConfig"):
        FeaturizeConfig(featurizer={"k": 19})  # type: ignore[arg-type]


def test_interrupted_copy_of_a_store_resumes(tmp_path: Path, inputs: list[Path]) -> None:
    """A store copied mid-run (rows past the commit on disk) completes on the next run."""
    out = tmp_path / "s.zarr"
    featurize(inputs[:1], out, config())
    snapshot = tmp_path / "snap.zarr"
    shutil.copytree(out, snapshot)
    featurize(inputs, snapshot, config())
    check_complete(snapshot)


KILL_SCRIPT = """
import sys
from fastgap.features import FeaturizerConfig
from fastgap.featurize import FeaturizeConfig, featurize
config = FeaturizeConfig(featurizer=FeaturizerConfig(backend="reference"), workers=0,
                         chunk_size=5, flush_atoms=20, progress=False)
featurize([sys.argv[1]], sys.argv[2], config)
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    """A real ``kill -9`` once some batches are committed; the same command then completes."""
    import json as _json
    import os
    import signal
    import subprocess
    import sys
    import time

    lines = (DATA / "mp12.jsonl").read_text().splitlines()
    src = tmp_path / "many.jsonl"
    records = [_json.loads(line) | {"id": f"c{i}-{j}"} for i in range(40)
               for j, line in enumerate(lines)]
    src.write_text("\n".join(map(_json.dumps, records)) + "\n")
    out = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(out)], env=env)
    try:
        while proc.poll() is None:
            if (out / "zarr.json").exists() and Store.open(out).n_structures > 0:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = Store.open(out).n_structures
    summary = featurize([src], out, config(chunk_size=50, flush_atoms=500))
    assert summary.written == len(records) - before
    assert summary.written + summary.skipped == summary.inputs == len(records)
    ids = list(Store.open(out).ids)
    assert ids == [r["id"] for r in records]
