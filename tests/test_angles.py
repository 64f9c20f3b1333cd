"""Angle signatures of neighbour-list entries (fastgap.angles) and the model option reading them.

The signatures are checked against a direct NumPy evaluation of the module's formula on
molecules (no ties, the shell is every atom), and as invariants on crystals: equivalent
descriptions (axis swaps, origin shifts, atom permutations, rotations, other cells,
supercells) give the same multiset of per-atom rows, including fcc, whose 19th neighbour
falls inside a shell of 24.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgap.angles import entry_angles
from fastgap.data import ALL_VARIANTS, StructureDataset, collate
from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_structures
from fastgap.gather import gather_batch
from fastgap.inference import angle_bins_of
from fastgap.model import FastGapModel, ModelConfig
from fastgap.structures import Structure, from_cartesian
from fastgap.symmetry import FAMILIES, transform

BINS = 6
TINY = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}
REFERENCE = FeaturizerConfig(backend="reference")


def _molecules() -> list[Structure]:
    rng = np.random.default_rng(5)
    out = []
    for n in (1, 2, 3, 7, 24):
        pos = rng.uniform(0, 3.0 + n ** (1 / 3), (n, 3))
        while n > 1 and min(np.linalg.norm(pos[i] - pos[j]) for i in range(n) for j in range(i)) < 0.9:
            pos = rng.uniform(0, 3.0 + n ** (1 / 3), (n, 3))
        out.append(from_cartesian(f"mol{n}", pos, rng.integers(1, 10, n)))
    return out


def _by_hand(pos: np.ndarray, bins: int) -> np.ndarray:
    """(N, 20, bins) the module's formula evaluated directly on a molecule (positions (N, 3)
    Å) whose distances are all distinct (each list is its atoms nearest first, the shell is
    the list)."""
    n_atoms = len(pos)
    out = np.zeros((n_atoms, 20, bins))
    centres = np.linspace(-1.0, 1.0, bins)
    width = 2.0 / (bins - 1)
    for i in range(n_atoms):
        if n_atoms == 1:  # no neighbours: the centre's zero row only
            continue
        vec = np.delete(pos - pos[i], i, axis=0)
        dist = np.linalg.norm(vec, axis=1)
        order = np.argsort(dist)[:19]
        vec, dist = vec[order], dist[order]
        cos = (vec @ vec.T) / np.outer(dist, dist)  # (n, n)
        w = (dist[0] / dist) ** 2
        g = np.exp(-(((cos[..., None] - centres) / width) ** 2)) * w[None, :, None]  # (n, n, B)
        g[np.arange(len(dist)), np.arange(len(dist))] = 0.0  # m != j
        out[i, 1:1 + len(dist)] = np.log1p(g.sum(axis=1))
    return out


def _rows(s: Structure, config: FeaturizerConfig = REFERENCE) -> np.ndarray:
    """Per-atom rows (numbers, rounded distances, rounded signatures), sorted: a multiset."""
    batch, rejects = featurize_structures([s], config)
    assert not rejects
    ang = entry_angles(batch, BINS)  # (A, 20, B)
    rows = np.concatenate([batch.numbers[:, None], batch.nbr_numbers,
                           np.round(batch.nbr_distances, 4), np.round(ang.reshape(len(ang), -1), 3)],
                          axis=1)  # fmt: skip
    return rows[np.lexsort(rows.T[::-1])]


def test_molecules_match_the_formula() -> None:
    mols = _molecules()
    batch, _ = featurize_structures(mols, REFERENCE)
    got = entry_angles(batch, BINS)
    assert got.shape == (batch.n_atoms, 20, BINS) and got.dtype == np.float32
    ptr = batch.atom_ptr
    # the positions the store keeps (float32 fractional coordinates), in float64
    want = np.concatenate([_by_hand(batch.frac_coords[ptr[m]:ptr[m + 1]].astype(np.float64)
                                    @ batch.lattice[m].astype(np.float64), BINS)
                           for m in range(len(mols))])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert not got[:, 0].any()  # the centre's column is zero


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_equivalent_descriptions_give_the_same_signatures(crystals, family: str) -> None:
    rng = np.random.default_rng(8)
    for s in crystals:
        t = transform(s, family, rng)
        repeat = t.n_atoms // s.n_atoms
        np.testing.assert_allclose(_rows(t), np.repeat(_rows(s), repeat, axis=0), rtol=0,
                                   atol=2e-3)


def test_fcc_signatures_use_the_whole_tie_shell(crystals) -> None:
    """The 19th neighbour of fcc lies in a shell of 24: every entry of that shell that the
    list keeps has the same signature, since all 24 are equivalent around the centre."""
    fcc = crystals[1]
    batch, _ = featurize_structures([fcc], REFERENCE)
    ang = entry_angles(batch, BINS)[0]  # (20, B)
    d = batch.nbr_distances[0]
    for shell in np.unique(np.round(d, 4)):
        rows = ang[1:][np.round(d, 4) == shell]
        np.testing.assert_allclose(rows, rows[:1].repeat(len(rows), 0), rtol=0, atol=1e-6)


def test_bad_bins_and_mismatched_lists_are_errors(crystals) -> None:
    batch, _ = featurize_structures(crystals[:1], REFERENCE)
    for bins in (1, 0, True, 2.5):
        with pytest.raises(ValueError, match=r"bins: expected an integer >= 2"):
            entry_angles(batch, bins)
    batch.nbr_distances[1, 4] += 0.01  # a stored list the coordinates cannot give
    with pytest.raises(ValueError, match=r"structure 0 \(nacl\).*do not match.*re-featurize"):
        entry_angles(batch, BINS)


def _angle_data(crystals: list[Structure]) -> FeaturizedBatch:
    batch, _ = featurize_structures([*crystals, *_molecules()], REFERENCE)
    return batch


def test_dataset_shares_rows_only_with_equal_signatures_and_collates_them(crystals) -> None:
    batch = _angle_data(crystals)
    plain = StructureDataset(batch)
    ds = StructureDataset(batch, angle_bins=BINS)
    assert ds.angles.shape == (len(ds.numbers), 20, BINS)
    assert len(ds.numbers) >= len(plain.numbers)  # sharing refined, never coarser
    assert len(ds.numbers) < batch.n_atoms  # rock salt's equivalent atoms still share
    items = [(i, ALL_VARIANTS) for i in range(len(ds))]
    a, b = collate([ds[i] for i in items]), gather_batch(ds, items)
    assert torch.equal(a.atom_angles, b.atom_angles)
    assert a.atom_angles.shape == (*a.atom_numbers.shape, BINS)


def test_model_reads_the_angles_and_checks_them(crystals) -> None:
    batch = _angle_data(crystals)
    ds = StructureDataset(batch, angle_bins=BINS)
    torch.manual_seed(0)
    model = FastGapModel(ModelConfig(**TINY, angle_bins=BINS)).double().eval()
    b = collate([ds[(i, ALL_VARIANTS)] for i in range(len(ds))])
    b.atom_distances, b.atom_angles = b.atom_distances.double(), b.atom_angles.double()
    with torch.no_grad():
        out = model(b)
        alone = [model(collate([ds[(i, ALL_VARIANTS)]])) for i in range(len(ds))]
        changed = b.atom_angles.clone()
        changed[:, 1:] += 0.5
        other = model(type(b)(**{**b.__dict__, "atom_angles": changed}))
    assert not torch.allclose(out, other)  # the signatures reach the output
    for i, a in enumerate(alone):  # alone == in a batch
        torch.testing.assert_close(a[0].double(), out[i], rtol=0, atol=1e-6)
    garbage = b.atom_angles.clone()
    past = torch.arange(20)[None, :] >= b.atom_lengths[:, None]
    garbage[past] = float("nan")
    with torch.no_grad():
        padded = model(type(b)(**{**b.__dict__, "atom_angles": garbage}))
    torch.testing.assert_close(padded, out, rtol=0, atol=0)  # padding is never read
    with pytest.raises(ValueError, match=r"angle_bins=6 .*got None; build the data"):
        model(collate([StructureDataset(batch)[0]]))
    with pytest.raises(ValueError, match=r"angle_bins: expected 0 or an integer >= 2, got 1"):
        ModelConfig(angle_bins=1)
    models = [FastGapModel(ModelConfig(**TINY, angle_bins=n)) for n in (0, 4, 6)]
    assert angle_bins_of(models[:2]) == 4 and angle_bins_of(models[:1]) == 0
    with pytest.raises(ValueError, match=r"different sizes \[4, 6\]"):
        angle_bins_of(models)


def test_gradients_stay_in_their_structure_and_save_load_round_trips(crystals, tmp_path) -> None:
    from fastgap.checkpoint import load_model, save_model
    from fastgap.model import predict_batch

    batch = _angle_data(crystals)
    ds = StructureDataset(batch, angle_bins=BINS)
    torch.manual_seed(1)
    model = FastGapModel(ModelConfig(**TINY, angle_bins=BINS)).double()
    b = collate([ds[(i, ALL_VARIANTS)] for i in range(len(ds))])
    b.atom_distances = b.atom_distances.double()
    b.atom_angles = b.atom_angles.double().requires_grad_(True)
    model(b)[4].sum().backward()  # structure 4: the 3-atom molecule
    rows = torch.repeat_interleave(torch.arange(len(ds)), torch.as_tensor(np.diff(ds.rep_ptr)))
    valid = torch.arange(20)[None, :] < b.atom_lengths[:, None]
    grad = b.atom_angles.grad.abs().sum(dim=-1)  # (N, L)
    assert (grad[rows != 4] == 0).all() and (grad[~valid] == 0).all()
    assert grad[(rows == 4)[:, None] & valid][1:].sum() > 0
    path = save_model(model.float(), tmp_path / "m.safetensors", targets=["band_gap_eV"],
                      featurizer={"k": 19})
    loaded, meta = load_model(path, featurizer={"k": 19})
    assert meta["model_config"]["angle_bins"] == BINS
    np.testing.assert_array_equal(predict_batch(loaded, batch), predict_batch(model, batch))


@pytest.mark.parametrize("encoding", ["inverse", "rbf"])
def test_the_compiled_lstm_core_reads_the_angles_as_torch_does(crystals, encoding: str,
                                                               monkeypatch) -> None:
    from fastgap.lstm_rows import KERNEL_ENV, kernel_applies
    from fastgap.model import predict_batch

    batch = _angle_data(crystals)
    torch.manual_seed(2)
    model = FastGapModel(ModelConfig(**TINY, angle_bins=BINS, distance_encoding=encoding,
                                     pooling="attention")).eval()
    with torch.no_grad():
        applies = kernel_applies(model.atom_lstm, torch.zeros(1))
    if not applies:
        pytest.skip("the compiled LSTM core has no vector code for this CPU")
    core = predict_batch(model, batch)
    monkeypatch.setenv(KERNEL_ENV, "0")
    np.testing.assert_allclose(core, predict_batch(model, batch), rtol=0, atol=2e-5)


def test_screening_builds_the_angles_for_a_model_that_reads_them(crystals, tmp_path) -> None:
    import fastgap
    from fastgap.checkpoint import save_model
    from fastgap.model import predict_batch

    torch.manual_seed(3)
    model = FastGapModel(ModelConfig(**TINY, angle_bins=BINS)).eval()
    path = save_model(model, tmp_path / "m.safetensors", targets=["band_gap_eV"],
                      featurizer={"k": 19})
    df = fastgap.predict([*crystals, *_molecules()], model=path)
    batch = _angle_data(crystals)
    want = predict_batch(model, batch)[:, 0]
    assert list(df["id"]) == list(batch.ids)
    np.testing.assert_allclose(df["band_gap_regressor_eV"], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["atom_permutation", "origin_shift", "rotation",
                                    "cell_choice", "supercell_221"])
def test_real_crystals_keep_their_signatures(family: str) -> None:
    """25 Materials Project crystals (near-ties of a few 1e-5 Å among mixed elements
    included) under equivalent descriptions."""
    from pathlib import Path

    from fastgap.readers import read_structures

    path = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"
    crystals = read_structures([path])[:25]
    rng = np.random.default_rng(13)
    moved = [transform(s, family, rng) for s in crystals]
    config = FeaturizerConfig()
    for s, t in zip(crystals, moved):
        repeat = t.n_atoms // s.n_atoms
        np.testing.assert_allclose(_rows(t, config), np.repeat(_rows(s, config), repeat, axis=0),
                                   rtol=0, atol=2e-3, err_msg=f"{s.id} under {family}")


def test_training_with_angles_resumes_as_straight_through(tmp_path, learning_history) -> None:
    from pathlib import Path

    from fastgap.checkpoint import load_model
    from fastgap.model import predict_batch
    from fastgap.readers import read_structures
    from fastgap.train import TrainConfig, train

    path = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"
    data, _ = featurize_structures(read_structures([path]), FeaturizerConfig())

    def config(out: str, **kw) -> TrainConfig:
        return TrainConfig(out=str(tmp_path / out), targets=["band_gap_eV"], epochs=2,
                           model=ModelConfig(**TINY, angle_bins=4, pooling="attention"),
                           progress=False, compile="off", device="cpu", batch_size=16, **kw)

    straight = train(config("a"), data)
    train(config("b", stop_after_epochs=1), data)
    resumed = train(config("b", resume=True), data)
    assert learning_history(straight) == learning_history(resumed)
    model, meta = load_model(straight / "best.safetensors")
    assert meta["model_config"]["angle_bins"] == 4
    pred = predict_batch(model, data)
    assert pred.shape == (data.n_structures, 1) and np.isfinite(pred).all()
