"""Labels from a CSV joined by id: CGCNN's id_prop.csv and headed tables, bad files, and a
training run on CIFs that carry no properties of their own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastgap.cli import main
from fastgap.features import FeaturizerConfig, featurize_structures
from fastgap.labels import attach_labels, read_labels
from fastgap.readers import read_structures

EXAMPLES = Path(__file__).parents[1] / "fastgap" / "examples" / "cifs"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_headed_table_with_empty_cells(tmp_path: Path) -> None:
    f = _write(tmp_path / "l.csv", "formation_eV,id,gap_eV\n-1.5,a,0.5\n,b,2\n0.25,c,\n")
    ids, cols = read_labels(f, ["gap_eV"])
    assert ids == ["a", "b", "c"] and list(cols) == ["formation_eV", "gap_eV"]
    np.testing.assert_array_equal(cols["formation_eV"], [-1.5, np.nan, 0.25])
    np.testing.assert_array_equal(cols["gap_eV"], [0.5, 2.0, np.nan])


def test_cgcnn_id_prop_takes_the_target_name(tmp_path: Path) -> None:
    f = _write(tmp_path / "id_prop.csv", "mp-1,1.25\nmp-2,0\n")
    ids, cols = read_labels(f, ["band_gap_eV"])
    assert ids == ["mp-1", "mp-2"]
    np.testing.assert_array_equal(cols["band_gap_eV"], [1.25, 0.0])


@pytest.mark.parametrize(("text", "targets", "match"), [
    ("", ["y"], "is empty"),
    ("a,1\nb,2\n", ["y", "z"], "no header, so its value column is named after the target"),
    ("a,1,2\n", ["y"], "no header and 3 columns"),
    ("name,y\na,1\n", ["y"], "has no 'id' column"),
    ("id,y,y\na,1,2\n", ["y"], "repeated column names"),
    ("id\na\n", ["y"], "no property column"),
    ("id,y\na,1\na,2\n", ["y"], "id 'a' repeats line 2"),
    ("id,y\na,high\n", ["y"], "line 2, column 'y'.*expected a number.*'high'"),
    ("id,y\na,inf\n", ["y"], "infinite value"),
    ("id,y\na\n", ["y"], "line 2: expected 2 cells, got 1"),
    ("id,y\n ,1\n", ["y"], "line 2: empty id"),
])
def test_bad_label_files_are_clear_errors(tmp_path: Path, text: str, targets: list[str],
                                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_labels(_write(tmp_path / "l.csv", text), targets)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="labels: no file at"):
        read_labels(tmp_path / "none.csv", ["y"])


def test_join_by_id_replaces_and_reports(tmp_path: Path) -> None:
    files = sorted(EXAMPLES.glob("mp-*.cif"))[:4]
    batch, _ = featurize_structures(read_structures(files), FeaturizerConfig())
    ids = [f.stem for f in files]
    f = _write(tmp_path / "l.csv", f"id,y\n{ids[2]},3\n{ids[0]},1\nnot-there,9\n")
    joined, report = attach_labels(batch, f, ["y"])
    np.testing.assert_array_equal(joined.properties["y"], [1.0, np.nan, 3.0, np.nan])
    assert (report.rows, report.matched, report.unmatched) == (3, 2, 1)
    assert report.first_unmatched == ["not-there"]
    assert "y" not in batch.properties  # the input batch is unchanged
    with pytest.raises(ValueError, match="no id of .* names a structure"):
        attach_labels(batch, _write(tmp_path / "m.csv", "x.cif,1\n"), ["y"])


def test_train_on_cifs_with_cgcnn_labels(tmp_path: Path) -> None:
    """CGCNN layout: a directory of CIFs and a headerless id_prop.csv."""
    root = tmp_path / "data"
    root.mkdir()
    files = sorted(EXAMPLES.glob("mp-*.cif"))[:20]
    for f in files:
        shutil.copy(f, root / f.name)
    rng = np.random.default_rng(0)
    lines = [f"{f.stem},{v:.3f}" for f, v in zip(files[:-2], rng.uniform(0, 3, len(files)))]
    _write(root / "id_prop.csv", "\n".join(lines) + "\n")  # two structures unlabelled
    assert main(["featurize", str(root), "--out", str(tmp_path / "store"), "--workers", "0",
                 "--no-progress"]) == 0
    _write(tmp_path / "small.toml", "[model]\nembed_dim = 8\natom_hidden = 8\n"
           "struct_hidden = 8\nhead_sizes = [8]\n")
    out = tmp_path / "run"
    # two label rows name no structure, to check the report
    _write(root / "id_prop.csv", (root / "id_prop.csv").read_text() + "ghost-1,1\nghost-2,2\n")
    args = ["train", "--store", str(tmp_path / "store"), "--labels", str(root / "id_prop.csv"),
            "--target", "my_gap_eV", "--out", str(out), "--config", str(tmp_path / "small.toml"),
            "--epochs", "1", "--compile", "off", "--device", "cpu", "--no-progress"]
    with pytest.warns(UserWarning, match="2 of 20 rows .* name no structure"):
        assert main(args) == 0
    report = json.loads((out / "labels.json").read_text())
    assert (report["rows"], report["matched"], report["unmatched"]) == (20, 18, 2)
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 18  # the unlabelled CIFs are left out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["tta"]["my_gap_eV"]["n"] == len(split["train"])
