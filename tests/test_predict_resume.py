"""`fastgap predict --resume`: a run stopped part-way and resumed writes what a straight run
writes; a changed model or option, Parquet output or a finished file are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastgap import screening
from fastgap.featurize import FeaturizeConfig, featurize
from fastgap.screening import PredictConfig, predict_to_file, run_state_path

DATA = Path(__file__).parent / "data" / "predict"
EXAMPLES = Path(__file__).parents[1] / "fastgap" / "examples" / "cifs"


def _inputs(root: Path) -> list[Path]:
    """Good and bad files, a JSON-lines file, a store, and ids repeated from other sources."""
    root.mkdir()
    cifs = sorted(EXAMPLES.glob("*.cif"))[:6]
    for f in cifs:
        shutil.copy(f, root / f.name)
    (root / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    (root / "empty.cif").write_text("")
    lines = [json.dumps({"id": "uranium", "lattice": (np.eye(3) * 3).tolist(),
                         "species": ["U"], "frac_coords": [[0, 0, 0]]})]
    (root / "extra.jsonl").write_text("\n".join(lines) + "\n")
    (root / "again").mkdir()
    shutil.copy(cifs[0], root / "again" / cifs[0].name)  # same id, another source
    featurize([DATA / "mp100.jsonl"], root / "store",
              FeaturizeConfig(workers=0, progress=False, chunk_size=50))
    return [root / "broken.cif", *[root / f.name for f in cifs[:3]], root / "empty.cif",
            root / "extra.jsonl", DATA / "mp100.jsonl", *[root / f.name for f in cifs[3:]],
            root / "again" / cifs[0].name, root / "store"]  # the store repeats mp100's ids


def _config(bundle, **kw) -> PredictConfig:
    return PredictConfig(model=bundle, **{"workers": 0, "progress": False, "batch_size": 16,
                                          "chunk_size": 4, **kw})


class Stop(Exception):
    pass


def _stop_after(monkeypatch, n_chunks: int) -> None:
    """Make the run fail in its ``n_chunks + 1``-th chunk, as a killed run would stop."""
    real, calls = screening.predict_chunk, [0]

    def predict_chunk(*args, **kwargs):
        calls[0] += 1
        if calls[0] > n_chunks:
            raise Stop
        return real(*args, **kwargs)

    monkeypatch.setattr(screening, "predict_chunk", predict_chunk)


@pytest.mark.parametrize("stop_at", [1, 9, 30])
def test_resumed_run_writes_what_a_straight_run_writes(bundle, tmp_path: Path, monkeypatch,
                                                       stop_at: int) -> None:
    inputs = _inputs(tmp_path / "in")
    straight = predict_to_file(inputs, tmp_path / "a.csv", _config(bundle))
    assert straight.predicted + straight.rejected == straight.inputs
    assert straight.rejected == 4  # two bad files, uranium, the CIF id from another source
    assert straight.predicted == 6 + 200  # the store repeats mp100 from the same source

    out = tmp_path / "b.csv"
    with monkeypatch.context() as m:
        _stop_after(m, stop_at)
        with pytest.raises(Stop):
            predict_to_file(inputs, out, _config(bundle))
    partial = out.with_name("b.csv.partial")
    assert not out.exists() and partial.exists() and run_state_path(out).exists()
    with partial.open("ab") as f:
        f.write(b"torn-row,0.12")  # killed in the middle of a row
    resumed = predict_to_file(inputs, out, _config(bundle, resume=True))

    assert out.read_bytes() == (tmp_path / "a.csv").read_bytes()
    assert (tmp_path / "b.rejects.csv").read_bytes() == (tmp_path / "a.rejects.csv").read_bytes()
    assert not partial.exists() and not run_state_path(out).exists()
    assert resumed.inputs == straight.inputs
    assert resumed.predicted + resumed.rejected + resumed.skipped == resumed.inputs
    assert resumed.skipped > 0 and resumed.predicted < straight.predicted
    assert resumed.predicted + resumed.rejected + resumed.skipped == resumed.inputs


def test_resume_with_worker_processes(bundle, tmp_path: Path, monkeypatch) -> None:
    inputs = [DATA / "mp100.jsonl"]
    predict_to_file(inputs, tmp_path / "a.csv", _config(bundle, chunk_size=10))
    out = tmp_path / "b.csv"
    with monkeypatch.context() as m:
        _stop_after(m, 4)
        with pytest.raises(Stop):
            predict_to_file(inputs, out, _config(bundle, chunk_size=10))
    resumed = predict_to_file(inputs, out, _config(bundle, chunk_size=10, workers=2,
                                                   resume=True))
    assert (resumed.skipped, resumed.predicted) == (40, 60)
    assert out.read_bytes() == (tmp_path / "a.csv").read_bytes()


def test_resume_without_a_partial_run_starts_afresh(bundle, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    summary = predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle, resume=True))
    assert summary.skipped == 0 and summary.predicted == 100
    with pytest.raises(ValueError, match="is complete, nothing to resume"):
        predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle, resume=True))


def test_resume_refuses_other_settings_and_parquet(bundle, tmp_path: Path,
                                                    monkeypatch) -> None:
    out = tmp_path / "p.csv"
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(Stop):
            predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle))
    with pytest.raises(ValueError, match="written with other settings .*'tta': True"):
        predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle, resume=True, tta=False))
    with pytest.raises(ValueError, match="written with other members, settings, columns"):
        predict_to_file([DATA / "mp100.jsonl"], out,
                        _config(bundle, resume=True, members=1))
    with pytest.raises(ValueError, match="written with other chunk_size"):
        predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle, resume=True,
                                                            chunk_size=5))
    with pytest.raises(ValueError, match="written with other inputs_sha256"):
        predict_to_file([DATA / "mp100.jsonl", EXAMPLES / "mp-30.cif"], out,
                        _config(bundle, resume=True))
    with pytest.raises(ValueError, match="resume: needs CSV output"):
        predict_to_file([DATA / "mp100.jsonl"], tmp_path / "p.parquet",
                        _config(bundle, resume=True))
    run_state_path(out).unlink()
    with pytest.raises(ValueError, match="partial.json is missing"):
        predict_to_file([DATA / "mp100.jsonl"], out, _config(bundle, resume=True))
