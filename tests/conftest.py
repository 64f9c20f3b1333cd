"""Shared fixtures: a tiny screening bundle trained on the in-repo fixture (seconds), the
`scripts/` files as modules, and a run's history without its wall-clock columns."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from fastgap.bundle_card import pack_bundle
from fastgap.ensemble import load_bundle
from fastgap.features import FeaturizerConfig, featurize_structures
from fastgap.model import ModelConfig
from fastgap.readers import read_structures
from fastgap.structures import Structure, make_structure
from fastgap.train import TrainConfig, train

DATA = Path(__file__).parent / "data" / "predict"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny band-gap regressors and a metal classifier, trained here (seconds)."""
    root = tmp_path_factory.mktemp("models")
    batch, _ = featurize_structures(read_structures([DATA / "mp100.jsonl"]), FeaturizerConfig())
    small = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
    runs = {}
    for name, target, where, seed in (("gap0", "band_gap_eV", "band_gap_eV > 0", 0),
                                      ("gap1", "band_gap_eV", "band_gap_eV > 0", 1),
                                      ("metal", "is_metal", "", 0)):
        cfg = TrainConfig(out=str(root / name), targets=[target], where=where, epochs=1,
                          seed=seed, model=small, progress=False, compile="off", device="cpu",
                          max_z=85, batch_size=32)
        runs[name] = train(cfg, batch)
    return pack_bundle(root / "bundle", [runs["gap0"], runs["gap1"]], [runs["metal"]],
                       {"data": "tests/data/predict/mp100.jsonl"})


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path):
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("name")`` imports ``scripts/name.py`` (scripts are not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"fastgap_script_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def learning_history() -> Callable[[Path], list[dict]]:
    """``learning_history(run_dir)``: ``history.json`` without the per-epoch seconds
    (``train_s``, ``val_s``; checked present and positive), which differ from run to run."""

    def read(run: Path) -> list[dict]:
        hist = json.loads((Path(run) / "history.json").read_text())
        assert all(h["train_s"] > 0 and h["val_s"] > 0 for h in hist)
        return [{k: v for k, v in h.items() if k not in ("train_s", "val_s")} for h in hist]

    return read


@pytest.fixture(scope="session")
def crystals() -> list[Structure]:
    """Rock salt (8-atom cubic cell), fcc Cu (1 atom; its 19th neighbour in a shell of 24)
    and a 3-atom triclinic cell: crystals whose equivalent descriptions tests compare."""
    rocksalt = make_structure(
        "nacl", np.eye(3) * 5.64,
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
         [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]],
        [11, 11, 11, 11, 17, 17, 17, 17],
    )  # fmt: skip
    fcc = make_structure("cu", (np.ones((3, 3)) - np.eye(3)) * 1.805, [[0, 0, 0]], [29])
    tric = make_structure(
        "tric", [[4.1, 0.0, 0.0], [0.9, 3.7, 0.0], [0.4, 0.7, 5.2]],
        [[0.1, 0.2, 0.3], [0.6, 0.55, 0.8], [0.35, 0.9, 0.05]], [8, 22, 8],
    )  # fmt: skip
    return [rocksalt, fcc, tric]
