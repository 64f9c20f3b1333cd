"""Model invariances (masks are data), configs, compile, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastgap.checkpoint import FORMAT_VERSION, check_featurizer, load_model, save_model
from fastgap.data import ALL_VARIANTS, StructureDataset, collate
from fastgap.model import FastGapModel, ModelConfig, predict_batch
from fastgap.synthetic import synthetic_featurized

TINY = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}
CONFIGS = [
    ModelConfig(**TINY),
    ModelConfig(**TINY, bidirectional=True, layers=2, distance_encoding="rbf"),
    ModelConfig(**TINY, pooling="attention"),
    ModelConfig(**TINY, pooling="mean"),
    # options off by default: physical element features, a second (neighbour) round
    ModelConfig(**TINY, element_features="physical"),
    ModelConfig(**TINY, element_features="physical", distance_encoding="rbf", pooling="attention"),
    ModelConfig(**TINY, rounds=2),
    ModelConfig(**TINY, rounds=2, distance_encoding="rbf", bidirectional=True, layers=2),
    ModelConfig(**TINY, rounds=2, element_features="physical", pooling="mean"),
    # composition descriptors beside the pooled vector
    ModelConfig(**TINY, composition="physical"),
    ModelConfig(**TINY, composition="physical", rounds=2, pooling="attention"),
]


def _id(cfg: ModelConfig) -> str:
    comp = "-comp" if cfg.composition != "none" else ""
    return f"{cfg.element_features}-r{cfg.rounds}-{cfg.distance_encoding}-{cfg.pooling}{comp}"


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


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_alone_equals_in_batch(cfg: ModelConfig, data) -> None:
    ds, model = StructureDataset(data), _model(cfg)
    together = model(_collate(ds, range(10)))
    alone = torch.cat([model(_collate(ds, [i])) for i in range(10)])
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_inference_in_row_chunks_equals_one_pass(cfg: ModelConfig, data, monkeypatch) -> None:
    """Without autograd the LSTMs (and the round-1 / round-2 inputs) run over row chunks;
    chunks of 3 rows split every structure here, and the output is unchanged."""
    import fastgap.lstm_rows

    ds, model = StructureDataset(data), _model(cfg)
    batch = _collate(ds, range(24))
    one_pass = model(batch).detach()  # autograd on: one call per LSTM
    calls = []
    hook = model.atom_lstm.register_forward_hook(lambda *a: calls.append(1))
    monkeypatch.setattr(fastgap.lstm_rows, "INFERENCE_ROWS", 3)
    with torch.inference_mode():
        chunked = model(batch)
    hook.remove()
    assert len(calls) == -(-batch.atom_numbers.shape[0] // 3)
    torch.testing.assert_close(chunked, one_pass, rtol=0, atol=1e-12)


def test_inference_pads_lstm_rows_to_few_shapes(data) -> None:
    """Without autograd on CPU every per-atom LSTM call sees a multiple of
    INFERENCE_ROW_QUANTUM rows (a few shapes for oneDNN's cache); outputs are unchanged."""
    from fastgap.lstm_rows import INFERENCE_ROW_QUANTUM

    ds, model = StructureDataset(data), _model(ModelConfig())
    crystals = [i for i in range(len(ds)) if data.pbc[i].all()][:5]  # full lists: unpacked
    batch = _collate(ds, crystals)
    assert batch.atom_numbers.shape[0] % INFERENCE_ROW_QUANTUM != 0
    assert bool((batch.atom_lengths == batch.atom_numbers.shape[1]).all())
    rows: list[int] = []
    hook = model.atom_lstm.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    one_pass = model(batch).detach()
    with torch.inference_mode():
        padded = model(batch)
    hook.remove()
    assert rows[0] == batch.atom_numbers.shape[0] and rows[1] % INFERENCE_ROW_QUANTUM == 0
    torch.testing.assert_close(padded, one_pass, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
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


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_garbage_in_padding_changes_nothing(cfg: ModelConfig, data) -> None:
    ds, model = StructureDataset(data), _model(cfg)
    b = _collate(ds, range(12))
    ref = model(b)
    pad = torch.arange(20)[None, :] >= b.atom_lengths[:, None]
    assert pad.any()
    b.atom_numbers[pad] = 999  # outside the embedding and the element tables
    b.atom_distances[pad] = float("nan")
    seq_pad = torch.arange(b.seq_atoms.shape[1])[None, :] >= b.seq_lengths[:, None]
    b.seq_atoms[seq_pad] = 1
    if b.atom_nbr_rows is not None:  # entries past the length point anywhere
        own = b.atom_nbr_rows[:, 0]
        nbr_pad = torch.arange(20)[None, :] >= b.atom_lengths[own][:, None]
        assert nbr_pad.any()
        b.atom_nbr_rows[nbr_pad] = 0
    torch.testing.assert_close(model(b), ref, rtol=0, atol=0)


def test_default_is_the_design() -> None:
    cfg = ModelConfig()
    assert (cfg.distance_encoding, cfg.pooling, cfg.bidirectional) == ("inverse", "lstm", False)
    model = _model(cfg)
    numbers = torch.tensor([[6, 8]])
    dist = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    vec = model.entry_vectors(numbers, dist, torch.tensor([2]))
    emb = model.embed(numbers)
    torch.testing.assert_close(vec[0, 0], emb[0, 0], rtol=0, atol=0)  # centre: 1 / Å
    torch.testing.assert_close(vec[0, 1], emb[0, 1] / 2.0, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("embed_dim", 0, "embed_dim: expected an integer >= 1"),
     ("distance_encoding", "cosine", "distance_encoding: expected one of"),
     ("pooling", "max", "pooling: expected one of"),
     ("dropout", 1.0, r"dropout: expected a number in \[0, 1\)")],
)
def test_model_config_validation(field: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{field: value})


def test_rbf_encoding_is_the_gaussians_without_denormals() -> None:
    """Gaussians far from a distance are exactly 0, not float32 denormals (which make the
    exp and the LSTM's input product an order slower); the rest are the Gaussians."""
    model = FastGapModel(ModelConfig(distance_encoding="rbf", rbf_bins=32, rbf_cutoff=8.0))
    d = torch.linspace(0.0, 12.0, 2401).reshape(-1, 1).repeat(1, 20)  # (N, L) Å
    enc = model.distance_encoding(d, torch.ones_like(d, dtype=torch.bool))  # (N, L, 32)
    width = 8.0 / 32
    ref = torch.exp(-(((d.unsqueeze(-1) - model.rbf_centres) / width) ** 2))  # the Gaussians
    seen = ref > 1e-37
    assert seen.any() and (~seen).any()
    np.testing.assert_array_equal(enc[seen].numpy(), ref[seen].numpy())
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float32
    assert bool(((ref > 0) & (ref < tiny)).any())  # the plain formula does make denormals
    assert bool(((enc == 0) | (enc >= tiny)).all())  # no denormals
    assert bool((enc[ref < tiny] <= 1.7e-38).all())
    assert bool((enc[ref < 1e-40] == 0).all())


def test_model_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({"hidden": 3})


def test_predictions_do_not_depend_on_batch_size(data) -> None:
    model = FastGapModel(ModelConfig(**TINY))
    a = predict_batch(model, data, tta=True, batch_size=5)
    b = predict_batch(model, data, tta=True, batch_size=100)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # float32 BLAS blocking differs


def test_predict_batch_validation(data) -> None:
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        predict_batch("model", data)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        predict_batch(FastGapModel(ModelConfig(**TINY)), data, batch_size=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("pooling", ["lstm", "attention"])
def test_compiled_equals_eager(data, pooling: str) -> None:
    model = _model(ModelConfig(**TINY, pooling=pooling)).float()
    b = collate([StructureDataset(data)[(i, ALL_VARIANTS)] for i in range(6)])
    compiled = torch.compile(model, dynamic=True)
    with torch.no_grad():
        # tolerance: compiled kernels may reorder float32 sums
        torch.testing.assert_close(compiled(b), model(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_save_load_gives_identical_predictions(cfg: ModelConfig, tmp_path, data) -> None:
    model = FastGapModel(cfg)
    model.target_mean.fill_(1.5)
    model.target_std.fill_(0.7)
    path = save_model(model, tmp_path / "m.safetensors", targets=["band_gap_eV"],
                      featurizer={"k": 19})
    loaded, meta = load_model(path, featurizer={"k": 19})
    assert meta["format_version"] == FORMAT_VERSION and meta["targets"] == ["band_gap_eV"]
    assert ModelConfig.from_dict(meta["model_config"]) == cfg
    np.testing.assert_array_equal(predict_batch(loaded, data), predict_batch(model, data))


def test_checkpoint_errors(tmp_path) -> None:
    model = FastGapModel(ModelConfig(**TINY))
    path = save_model(model, tmp_path / "m.safetensors", targets=["x"], featurizer={"k": 19})
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(bad)
    with pytest.raises(ValueError, match="trained with k=19 neighbours, the data has k=12"):
        load_model(path, featurizer={"k": 12})
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="has no fastgap metadata"):
        load_model(tmp_path / "plain.safetensors")
    old = tmp_path / "old.safetensors"
    save_file({"w": torch.zeros(1)}, str(old), metadata={"fastgap": '{"format_version": 0}'})
    with pytest.raises(ValueError, match=f"format version 0 .* reads format version {FORMAT_VERSION}"):
        load_model(old)
    check_featurizer({"featurizer": {"k": 5}}, {"k": 5})
    assert dataclasses.is_dataclass(model.config)
