"""Model options that are off by default: physical element features, neighbour rounds.

Their invariance and save/load tests (alone == batched, no gradient across structures,
garbage padding) run with the other configurations in test_model.py. The design's model
must stay bit for bit what it was: checkpoints written before the options existed
(tests/data/model/*_v0.safetensors, with their predictions) still load and predict the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgap.checkpoint import load_model
from fastgap.data import ALL_VARIANTS, StructureDataset, collate
from fastgap.features import FeaturizedBatch
from fastgap.lstm_rows import final_state
from fastgap.model import FastGapModel, ModelConfig, predict_batch
from fastgap.synthetic import synthetic_featurized

DATA = Path(__file__).parent / "data" / "model"
TINY = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}


@pytest.fixture(scope="module")
def data():
    return synthetic_featurized(
        24, np.random.default_rng(3), molecule_fraction=0.5, with_indices=True
    ).validate()


def _model(cfg: ModelConfig, seed: int = 0) -> FastGapModel:
    torch.manual_seed(seed)
    return FastGapModel(cfg).double().eval()


def _collate(ds: StructureDataset, idx) -> object:
    b = collate([ds[(i, ALL_VARIANTS)] for i in idx])
    b.atom_distances = b.atom_distances.double()
    return b


@pytest.mark.parametrize("with_indices", [False, True], ids=["schema1", "schema2"])
@pytest.mark.parametrize("name", ["design", "rbf_attention"])
def test_checkpoints_from_before_the_options_predict_the_same(name: str, with_indices) -> None:
    model, meta = load_model(DATA / f"{name}_v0.safetensors", featurizer={"k": 19})
    assert "element_features" not in meta["model_config"]  # written before the option
    assert model.config.element_features == "learned"
    data = synthetic_featurized(16, np.random.default_rng(11), molecule_fraction=0.3,
                                with_indices=with_indices)
    want = np.load(DATA / f"{name}_v0_pred.npy")
    # recorded on another CPU: float32 kernels round differently between CPUs (about 3e-8
    # here), so the numbers are compared to well below any change a model option makes
    np.testing.assert_allclose(predict_batch(model, data, tta=True), want, rtol=0, atol=1e-6)


def test_default_config_round_trips_and_adds_no_parameters() -> None:
    cfg = ModelConfig()
    assert (cfg.element_features, cfg.rounds) == ("learned", 1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    keys = set(FastGapModel(cfg).state_dict())
    assert not any(k.startswith(("element_", "round_")) for k in keys)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"element_features": "magpie"}, "element_features: expected one of"),
     ({"element_features": "physical", "max_z": 120}, r"max_z: the physical element table"),
     ({"composition": "physical", "max_z": 120}, r"max_z: the physical element table"),
     ({"composition": "magpie"}, r"composition: expected one of \('none', 'physical'\)"),
     ({"rounds": 3}, r"rounds: expected one of \(1, 2\), got 3"),
     ({"rounds": True}, r"rounds: expected one of \(1, 2\), got True")],
)
def test_option_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


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


def test_rounds_1_reads_the_same_with_or_without_neighbour_rows(data) -> None:
    model = _model(ModelConfig(**TINY))
    plain = dataclasses.replace(data, nbr_indices=None)
    with_rows = model(_collate(StructureDataset(data), range(12)))
    without = model(_collate(StructureDataset(plain), range(12)))
    torch.testing.assert_close(with_rows, without, rtol=0, atol=0)
    skipped = StructureDataset(data, neighbour_rows=False)  # nbr_indices there, not read
    assert skipped.round_entries is None
    torch.testing.assert_close(model(_collate(skipped, range(12))), with_rows, rtol=0, atol=0)


def test_screening_builds_neighbour_rows_only_for_models_that_read_them(data) -> None:
    """One dataset serves every member: round-2 rows exactly when a member has rounds=2."""
    from fastgap import data as data_module
    from fastgap.ensemble import Bundle, Member
    from fastgap.screening import predict_featurized

    built = []
    real = data_module.StructureDataset

    def spy(*args, **kwargs):
        built.append(kwargs.get("neighbour_rows", True))
        return real(*args, **kwargs)

    def member(cfg: ModelConfig, seed: int) -> Member:
        cfg = dataclasses.replace(cfg, n_outputs=1)
        return Member(Path(f"m{seed}"), _model(cfg, seed).float(), {"targets": ["band_gap_eV"]})

    one, two = member(ModelConfig(**TINY), 0), member(ModelConfig(**TINY, rounds=2), 1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_module, "StructureDataset", spy)
        plain = predict_featurized(Bundle("a", band_gap=[one]), data, tta=True, batch_size=8)
        both = predict_featurized(Bundle("b", band_gap=[one, two]), data, tta=True,
                                  batch_size=8)
    assert built == [False, True]
    assert np.isfinite(both["band_gap_regressor_eV"]).all()
    alone = predict_featurized(Bundle("c", band_gap=[two]), data, tta=True, batch_size=8)
    np.testing.assert_allclose(both["band_gap_regressor_eV"] * 2 - alone["band_gap_regressor_eV"],
                               plain["band_gap_regressor_eV"], rtol=1e-5, atol=1e-6)


def test_rounds_2_without_nbr_indices_is_a_clear_error(data) -> None:
    model = _model(ModelConfig(**TINY, rounds=2))
    plain = dataclasses.replace(data, nbr_indices=None)
    with pytest.raises(ValueError, match=r"rounds=2 .*\(nbr_indices\).* re-featurize"):
        predict_batch(model, plain)
    with pytest.raises(ValueError, match=r"rounds=2 .*\(nbr_indices\).* re-featurize"):
        model(_collate(StructureDataset(plain), range(3)))


def _round_two_by_hand(model: FastGapModel, data, s: int) -> torch.Tensor:
    """Round-2 vectors of structure ``s``'s atoms from nbr_indices, one atom at a time."""
    a0, a1 = int(data.atom_ptr[s]), int(data.atom_ptr[s + 1])
    one = data.select([s])
    ds = StructureDataset(one, share_equivalent=False)
    b = collate([ds[0]])
    b.atom_distances = b.atom_distances.double()
    x = model.entry_vectors(b.atom_numbers, b.atom_distances, b.atom_lengths)
    h1 = final_state(model.atom_lstm, x, b.atom_lengths)  # (atoms, D), atom order
    rows = []
    for i in range(a1 - a0):
        n = int(data.nbr_counts[a0 + i])
        atoms = [i, *data.nbr_indices[a0 + i, :n].tolist()]
        dist = torch.tensor([[0.0, *data.nbr_distances[a0 + i, :n].tolist()]], dtype=torch.float64)
        enc = model.distance_encoding(dist, torch.ones_like(dist, dtype=torch.bool))
        x = torch.cat([h1[atoms][None], enc], dim=-1)  # (1, 1+n, D + C)
        _, (h, _) = model.round_lstm(x)
        rows.append(h[-1, 0])
    return torch.stack(rows)


def test_round_two_matches_a_by_hand_reference() -> None:
    # random indices and numbers: no two atoms share a list, so no tie reordering applies
    data = synthetic_featurized(5, np.random.default_rng(8), max_atoms=6, with_indices=True)
    model = _model(ModelConfig(**TINY, rounds=2))
    for s in range(5):
        b = _collate(StructureDataset(data.select([s]), share_equivalent=False), [0])
        got = model.atom_vectors(b)
        torch.testing.assert_close(got, _round_two_by_hand(model, data, s), rtol=0, atol=1e-12)


def hand_made(structures: list[list[tuple[int, list[tuple[int, float, int]]]]]) -> FeaturizedBatch:
    """A FeaturizedBatch from [[(Z, [(nbr Z, Å, nbr index), ...]), ...], ...], k = 3."""
    atoms = [atom for structure in structures for atom in structure]
    k = 3
    nbr_z = np.zeros((len(atoms), k), np.uint8)
    nbr_d = np.zeros((len(atoms), k), np.float32)
    nbr_i = np.full((len(atoms), k), -1, np.int32)
    for a, (_, entries) in enumerate(atoms):
        for e, (z, d, i) in enumerate(entries):
            nbr_z[a, e], nbr_d[a, e], nbr_i[a, e] = z, d, i
    n = len(structures)
    return FeaturizedBatch(
        ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        atom_ptr=np.cumsum([0] + [len(s) for s in structures]).astype(np.int64),
        lattice=np.repeat(np.eye(3, dtype=np.float32)[None] * 4, n, axis=0),
        pbc=np.ones((n, 3), bool),
        numbers=np.array([z for z, _ in atoms], np.uint8),
        frac_coords=np.linspace(0, 0.9, 3 * len(atoms), dtype=np.float32).reshape(-1, 3),
        nbr_numbers=nbr_z, nbr_distances=nbr_d,
        nbr_counts=np.array([len(e) for _, e in atoms], np.uint8),
        sources=np.array(["hand"] * n, dtype=object), nbr_indices=nbr_i,
    ).validate()


def test_round_two_sees_the_neighbours_lists() -> None:
    """Two atoms 0 with the same list whose neighbour's list differs: round 2 tells them apart."""
    centre = (8, [(14, 1.6, 1), (14, 1.7, 1), (14, 2.0, 1)])
    data = hand_made([
        [centre, (14, [(8, 1.6, 0), (8, 1.7, 0), (14, 2.5, 1)])],
        [centre, (14, [(8, 1.6, 0), (8, 1.9, 0), (8, 2.2, 0)])],
    ])  # fmt: skip
    ds = StructureDataset(data, share_equivalent=False)
    for rounds in (1, 2):
        vec = _model(ModelConfig(**TINY, rounds=rounds)).atom_vectors(_collate(ds, [0, 1]))
        if rounds == 1:
            torch.testing.assert_close(vec[0], vec[2], rtol=0, atol=0)  # atom 0 of each
        else:
            assert (vec[0] - vec[2]).abs().max() > 1e-4


@pytest.mark.parametrize("rounds", [1, 2])
def test_composition_vectors_are_the_mean_and_std_over_atoms(data, rounds: int) -> None:
    from fastgap.elements import element_descriptors

    model = _model(ModelConfig(**TINY, composition="physical", rounds=rounds))
    ds = StructureDataset(data)
    b = _collate(ds, range(8))
    got = model.composition_vectors(b).numpy()  # (Q, 2F), every order of each structure
    table = element_descriptors()
    for q, s in enumerate(b.seq_struct.tolist()):
        lo, hi = data.atom_ptr[s], data.atom_ptr[s + 1]
        desc = table[data.numbers[lo:hi]].astype(np.float64)  # (n_atoms, F)
        want = np.concatenate([desc.mean(axis=0), desc.std(axis=0)])
        np.testing.assert_allclose(got[q], want, rtol=0, atol=1e-5)
