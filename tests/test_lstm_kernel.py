"""The compiled LSTM core (cpp/fastgap_lstm.hpp) through `fastgap.lstm_rows` and the model:
equal to torch's LSTM up to float32 (or bfloat16) rounding, row-independent, blind to
padding, and used only where it applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastgap.lstm_rows
from fastgap.data import ALL_VARIANTS, StructureDataset, collate
from fastgap.lstm_rows import ISA_ENV, KERNEL_ENV, final_state, fused_final_state, kernel_applies
from fastgap.model import FastGapModel, ModelConfig
from fastgap.synthetic import synthetic_featurized

_core = pytest.importorskip("fastgap._core", reason="fastgap._core is not built")

SIZES = {"embed_dim": 12, "atom_hidden": 20, "struct_hidden": 8, "head_sizes": (8,)}


@pytest.fixture(autouse=True)
def _core_on_any_cpu(monkeypatch) -> None:
    """Name the best instruction set explicitly, so that the core runs (and is tested) even
    on a CPU where only its portable code exists (which it would not choose by itself)."""
    monkeypatch.setenv(ISA_ENV, _core.lstm_isas()[0])
    monkeypatch.delenv(KERNEL_ENV, raising=False)  # whatever the caller's environment says


def _entries(seed: int, rows: int = 50, steps: int = 7, table: int = 9):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, table, (rows, steps), generator=g)
    lengths = torch.randint(1, steps + 1, (rows,), generator=g)
    lengths[0] = steps
    vectors = torch.randn(table, 5, generator=g)
    return index, lengths, vectors, g


def _torch_reference(lstm: torch.nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # autograd on the inputs is off, but torch's LSTM runs whole
        return final_state(lstm, x, lengths)


@pytest.mark.parametrize("form", ["scale", "dense", "gaussians"])
def test_equals_torch_lstm(form: str) -> None:
    index, lengths, vectors, g = _entries(0)
    torch.manual_seed(1)
    if form == "scale":
        lstm = torch.nn.LSTM(5, 13, batch_first=True).eval()
        scale = torch.rand(index.shape, generator=g) + 0.2
        x = vectors[index] * scale[..., None]
        kw = {"scale": scale}
    elif form == "dense":
        lstm = torch.nn.LSTM(5 + 3, 13, batch_first=True).eval()
        dense = torch.rand(*index.shape, 3, generator=g)
        x = torch.cat([vectors[index], dense], dim=-1)
        kw = {"dense": dense}
    else:  # the model's "rbf" encoding, Gaussians past the cut written as 0
        lstm = torch.nn.LSTM(5 + 6, 13, batch_first=True).eval()
        distances = torch.rand(index.shape, generator=g) * 9.0
        centres, width, cut = torch.linspace(0.0, 8.0, 6), 8.0 / 6, 20.0
        arg = ((distances[..., None] - centres) / width) ** 2
        assert (arg >= cut).any() and (arg < cut).any()
        x = torch.cat([vectors[index], torch.where(arg < cut, torch.exp(-arg), 0.0)], dim=-1)
        kw = {"gaussians": (distances, centres, width, cut)}
    want = _torch_reference(lstm, x, lengths)
    with torch.inference_mode():
        assert kernel_applies(lstm, x)
        got = fused_final_state(lstm, vectors, index, lengths, **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got_bf16 = fused_final_state(lstm, vectors, index, lengths, **kw)
    assert got.dtype == torch.float32 and got.shape == (index.shape[0], 13)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    # bfloat16 products: close, but rounded (not the float32 numbers)
    torch.testing.assert_close(got_bf16, want, rtol=0, atol=3e-2)
    assert (got_bf16 - want).abs().max() > 1e-5


def test_every_instruction_set_agrees(monkeypatch) -> None:
    index, lengths, vectors, g = _entries(2, rows=40)
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(5, 18, batch_first=True).eval()
    scale = torch.rand(index.shape, generator=g)
    want = _torch_reference(lstm, vectors[index] * scale[..., None], lengths)
    for isa in _core.lstm_isas():
        monkeypatch.setenv(ISA_ENV, isa)
        with torch.inference_mode():
            got = fused_final_state(lstm, vectors, index, lengths, scale=scale)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6, msg=isa)
    monkeypatch.setenv(ISA_ENV, "sse9")
    with torch.inference_mode(), pytest.raises(ValueError, match="isa: 'sse9' is not available"):
        fused_final_state(lstm, vectors, index, lengths, scale=scale)


def test_applies_only_to_plain_float32_cpu_inference(monkeypatch) -> None:
    x = torch.zeros(2, 3, 4)
    plain = torch.nn.LSTM(4, 6, batch_first=True)
    with torch.inference_mode():
        assert kernel_applies(plain, x)
        assert not kernel_applies(torch.nn.LSTM(4, 6, num_layers=2, batch_first=True), x)
        assert not kernel_applies(torch.nn.LSTM(4, 6, bidirectional=True, batch_first=True), x)
        assert not kernel_applies(torch.nn.LSTM(4, 6, batch_first=True).double(), x)
        monkeypatch.setenv(KERNEL_ENV, "0")
        assert not kernel_applies(plain, x)
        monkeypatch.delenv(KERNEL_ENV)
        # by itself ("auto") the core runs only where it has vector code ...
        monkeypatch.setenv(ISA_ENV, "auto")
        monkeypatch.setattr(fastgap.lstm_rows, "_vector_isa", lambda: False)
        assert not kernel_applies(plain, x)
        monkeypatch.setattr(fastgap.lstm_rows, "_vector_isa", lambda: True)
        assert kernel_applies(plain, x)
        # ... its portable code (slower than torch's LSTM) only when asked for
        monkeypatch.setattr(fastgap.lstm_rows, "_vector_isa", lambda: False)
        monkeypatch.setenv(ISA_ENV, "portable")
        assert kernel_applies(plain, x)
    assert not kernel_applies(plain, x)  # autograd on: torch's LSTM


def test_binding_checks_shapes_and_indices() -> None:
    h = 4
    f32 = np.float32
    args = {
        "index": np.zeros((3, 5), np.int64), "scale": np.zeros(0, f32),
        "dense": np.zeros(0, f32), "distances": np.zeros(0, f32),
        "rbf_centres": np.zeros(0, f32), "rbf_width": 1.0, "rbf_zero": 87.0,
        "lengths": np.full(3, 5, np.int64),
        "table": np.zeros((2, 4 * h), f32), "w_dense": np.zeros((4 * h, 0), f32),
        "w_hh": np.zeros((4 * h, h), f32), "bias": np.zeros(4 * h, f32),
        "bf16": False, "num_threads": 1, "isa": "auto",
    }
    assert _core.lstm_final_states(**args).shape == (3, h)
    bad = [
        ({"w_hh": np.zeros((h, h), f32)}, r"w_hh: expected shape \(16, 4\), got \(4, 4\)"),
        ({"lengths": np.full(2, 5, np.int64)}, r"lengths: expected shape \(3\)"),
        ({"scale": np.ones((3, 4), f32)}, r"scale: expected shape \(3, 5\)"),
        ({"lengths": np.array([5, 0, 5])}, r"lengths: expected 1..5, row 1 has 0"),
        ({"index": np.full((3, 5), 2, np.int64)}, r"index: expected table rows 0..1"),
        ({"num_threads": -1}, "num_threads: expected >= 0"),
        ({"w_dense": np.zeros((4 * h, 2), f32)}, "dense: dense_dim > 0 needs either"),
        ({"w_dense": np.zeros((4 * h, 2), f32), "distances": np.ones((3, 5), f32),
          "rbf_centres": np.zeros(3, f32)}, r"rbf_centres: expected shape \(2\)"),
        ({"w_dense": np.zeros((4 * h, 2), f32), "distances": np.ones((3, 5), f32),
          "rbf_centres": np.zeros(2, f32), "rbf_width": 0.0}, "rbf_width: expected"),
    ]
    for change, match in bad:
        with pytest.raises(ValueError, match=match):
            _core.lstm_final_states(**{**args, **change})


@pytest.fixture(scope="module")
def data():
    return synthetic_featurized(
        24, np.random.default_rng(5), molecule_fraction=0.5, with_indices=True
    ).validate()


MODELS = [
    ModelConfig(**SIZES),
    ModelConfig(**SIZES, distance_encoding="rbf", pooling="attention",
                element_features="physical"),
    ModelConfig(**SIZES, rounds=2, distance_encoding="rbf"),
]


def _batch(data, idx):
    ds = StructureDataset(data, neighbour_rows=True)
    return collate([ds[(i, ALL_VARIANTS)] for i in idx])


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: f"{c.distance_encoding}-r{c.rounds}")
def test_model_outputs_equal_torch_path(cfg: ModelConfig, data, monkeypatch) -> None:
    torch.manual_seed(0)
    model = FastGapModel(cfg).eval()
    batch = _batch(data, range(24))
    with torch.inference_mode():
        fused = model(batch)
        alone = torch.cat([model(_batch(data, [i])) for i in range(24)])
        monkeypatch.setenv(KERNEL_ENV, "0")
        plain = model(batch)
    torch.testing.assert_close(fused, plain, rtol=0, atol=2e-5)
    # each row is computed alone: a structure's output does not depend on its batch
    torch.testing.assert_close(alone, fused, rtol=0, atol=1e-6)


def test_garbage_in_padding_changes_nothing(data) -> None:
    torch.manual_seed(0)
    model = FastGapModel(MODELS[1]).eval()
    batch = _batch(data, range(24))
    pad = torch.arange(batch.atom_numbers.shape[1])[None, :] >= batch.atom_lengths[:, None]
    assert pad.any()  # molecules: short lists
    with torch.inference_mode():
        clean = model(batch)
        batch.atom_numbers = batch.atom_numbers.masked_fill(pad, 10_000)
        batch.atom_distances = batch.atom_distances.masked_fill(pad, float("nan"))
        dirty = model(batch)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
