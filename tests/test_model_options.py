"""Model options that are off by default: physical element features, neighbour rounds.

The design's model must stay bit for bit what it was: checkpoints written before the
options existed (tests/data/model/*_v0.safetensors, with their predictions) still load and
predict the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastgap.checkpoint import load_model, save_model
from fastgap.data import ALL_VARIANTS, StructureDataset, collate, synthetic_featurized
from fastgap.model import FastGapModel, ModelConfig, predict_batch

DATA = Path(__file__).parent / "data" / "model"
TINY = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}
OPTIONS = [
    ModelConfig(**TINY, element_features="physical"),
    ModelConfig(**TINY, element_features="physical", distance_encoding="rbf", pooling="attention"),
]


def _id(cfg: ModelConfig) -> str:
    return f"{cfg.element_features}-{cfg.distance_encoding}-{cfg.pooling}"


@pytest.fixture(scope="module")
def data():
    return synthetic_featurized(24, np.random.default_rng(3), molecule_fraction=0.5)


def _model(cfg: ModelConfig, seed: int = 0) -> FastGapModel:
    torch.manual_seed(seed)
    return FastGapModel(cfg).double().eval()


def _collate(ds: StructureDataset, idx) -> object:
    b = collate([ds[(i, ALL_VARIANTS)] for i in idx])
    b.atom_distances = b.atom_distances.double()
    return b


@pytest.mark.parametrize("name", ["design", "rbf_attention"])
def test_checkpoints_from_before_the_options_predict_the_same(name: str) -> None:
    model, meta = load_model(DATA / f"{name}_v0.safetensors", featurizer={"k": 19})
    assert "element_features" not in meta["model_config"]  # written before the option
    assert model.config.element_features == "learned"
    data = synthetic_featurized(16, np.random.default_rng(11), molecule_fraction=0.3)
    want = np.load(DATA / f"{name}_v0_pred.npy")
    np.testing.assert_array_equal(predict_batch(model, data, tta=True), want)


def test_default_config_round_trips_and_adds_no_parameters() -> None:
    cfg = ModelConfig()
    assert cfg.element_features == "learned"
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    keys = set(FastGapModel(cfg).state_dict())
    assert not any(k.startswith(("element_", "round_")) for k in keys)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"element_features": "magpie"}, "element_features: expected one of"),
     ({"element_features": "physical", "max_z": 120}, r"max_z: element_features='physical'")],
)
def test_option_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("cfg", OPTIONS, ids=_id)
def test_alone_equals_in_batch(cfg: ModelConfig, data) -> None:
    ds, model = StructureDataset(data), _model(cfg)
    together = model(_collate(ds, range(10)))
    alone = torch.cat([model(_collate(ds, [i])) for i in range(10)])
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", OPTIONS, ids=_id)
def test_gradients_do_not_cross_structures_or_reach_padding(cfg: ModelConfig, data) -> None:
    ds, model = StructureDataset(data), _model(cfg)
    b = _collate(ds, range(6))
    b.atom_distances.requires_grad_(True)
    model(b)[2].sum().backward()
    grad = b.atom_distances.grad
    rows = torch.repeat_interleave(torch.arange(6), torch.as_tensor(np.diff(ds.rep_ptr[:7])))
    valid = torch.arange(20)[None, :] < b.atom_lengths[:, None]
    assert (grad[rows != 2] == 0).all()
    assert (grad[~valid] == 0).all()
    assert grad[(rows == 2)[:, None] & valid].abs().sum() > 0


@pytest.mark.parametrize("cfg", OPTIONS, ids=_id)
def test_garbage_in_padding_changes_nothing(cfg: ModelConfig, data) -> None:
    ds, model = StructureDataset(data), _model(cfg)
    b = _collate(ds, range(12))
    ref = model(b)
    pad = torch.arange(20)[None, :] >= b.atom_lengths[:, None]
    assert pad.any()
    b.atom_numbers[pad] = 999  # outside the tables
    b.atom_distances[pad] = float("nan")
    seq_pad = torch.arange(b.seq_atoms.shape[1])[None, :] >= b.seq_lengths[:, None]
    b.seq_atoms[seq_pad] = 1
    torch.testing.assert_close(model(b), ref, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", OPTIONS, ids=_id)
def test_save_load_gives_identical_predictions(cfg: ModelConfig, tmp_path, data) -> None:
    model = FastGapModel(cfg)
    model.target_mean.fill_(1.5)
    path = save_model(model, tmp_path / "m.safetensors", targets=["band_gap_eV"],
                      featurizer={"k": 19})
    loaded, meta = load_model(path, featurizer={"k": 19})
    assert ModelConfig.from_dict(meta["model_config"]) == cfg
    np.testing.assert_array_equal(predict_batch(loaded, data), predict_batch(model, data))


def test_physical_features_enter_the_entry_vectors() -> None:
    model = _model(ModelConfig(**TINY, element_features="physical"))
    numbers = torch.tensor([[14, 8, 0]])
    dist = torch.tensor([[0.0, 1.6, 0.0]], dtype=torch.float64)
    lengths = torch.tensor([2])
    with torch.no_grad():
        model.embed.weight.zero_()  # what remains is the physical part
        vec = model.entry_vectors(numbers, dist, lengths)
    proj = model.element_proj(model.element_table[torch.tensor([14, 8])])
    torch.testing.assert_close(vec[0, 0], proj[0], rtol=0, atol=0)  # centre: 1 / Å
    torch.testing.assert_close(vec[0, 1], proj[1] / 1.6, rtol=1e-12, atol=0)
    assert (vec[0, 2] == 0).all()  # padding: table row 0 and no bias
