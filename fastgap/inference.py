"""Inference for several models that read the same structures: one collate, every member.

`predict_members` is the screening counterpart of `fastgap.model.predict_dataset`: it walks
the same size-bucketed batches, but collates each batch once and hands it to every model,
so a bundle of M members pays for one collate instead of M. It calls each model's own
``forward`` and ``denormalize``: the forward path is the one of training and evaluation.

Test-time averaging (TTA) over axis-swap atom orders only matters for models whose pooling
reads the atoms in order (``pooling="lstm"``). For order-free pooling ("attention",
"mean") the structure vector is a masked, permutation-invariant sum over the same atom rows
(the rows do not depend on the order, only the sequences indexing them do), so every order
gives the same output up to float rounding of the sum and averaging them is wasted work.
Such models read only the identity order of each structure; the others read every order
when ``tta`` is on. See ``tests/test_inference.py`` for the check against full averaging.

Precision (`PRECISIONS`):

- ``"fp32"``: the default, the numbers of the model card.
- ``"bf16"``: CPU autocast to bfloat16 for the LSTMs and Linears. Faster only on CPUs with
  native bfloat16 arithmetic (AVX-512 BF16 or AMX); elsewhere it is emulated and slower
  than fp32 (both measured in benchmarks/RESULTS.md, ``## Screening``).
- ``"int8"``: dynamic int8 quantization of the LSTM and Linear weights
  (``torch.ao.quantization.quantize_dynamic``; activations are quantized per batch at run
  time), on a copy of each model made once per process. Its accuracy change and speed are
  measured in the same section (on an AVX-512 VNNI CPU it is slower than fp32).
- ``"auto"``: `resolve_precision` picks ``"bf16"`` where the CPU has native bfloat16,
  else ``"fp32"``.

Outputs are always float64 in the targets' units.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fastgap.data import Batch, BucketBatchSampler, StructureDataset, make_loader

PRECISIONS = ("fp32", "bf16", "int8", "auto")
ORDER_FREE_POOLINGS = ("attention", "mean")
# one int8 copy per float model and process, made on first use
_QUANTIZED: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = (
    weakref.WeakKeyDictionary()
)


def check_precision(precision: Any) -> str:
    """Return ``precision`` if it is one of `PRECISIONS`, else raise ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    return precision


def native_bf16() -> bool:
    """True when this CPU has bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX-BF16)."""
    try:
        caps = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):  # a torch without the query: assume not
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str) -> str:
    """``precision`` with ``"auto"`` replaced by ``"bf16"`` (native bfloat16) or ``"fp32"``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if native_bf16() else "fp32"


def quantized(model: torch.nn.Module) -> torch.nn.Module:
    """An int8 copy of ``model`` (LSTM and Linear weights; dynamic activations), cached.

    The copy runs the model's own ``forward``; ``model`` itself is not changed.
    """
    core = _core(model)
    copy = _QUANTIZED.get(core)
    if copy is None:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # the eager API's notice about its successor
            warnings.simplefilter("ignore")
            copy = quantize_dynamic(core, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
        copy.eval()
        _QUANTIZED[core] = copy
    return copy


def _core(model: torch.nn.Module) -> torch.nn.Module:
    core = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    return getattr(core, "_orig_mod", core)


def order_free(model: torch.nn.Module) -> bool:
    """True when ``model``'s output does not depend on the atom order (its pooling)."""
    return getattr(_core(model).config, "pooling", "lstm") in ORDER_FREE_POOLINGS


def angle_bins_of(models: Sequence[torch.nn.Module]) -> int:
    """The ``angle_bins`` the data of ``models`` needs: 0 if no model reads angles.

    Raises ValueError if models read angle signatures of different sizes (one dataset
    serves them all).
    """
    bins = sorted({getattr(_core(m).config, "angle_bins", 0) for m in models} - {0})
    if len(bins) > 1:
        raise ValueError(f"models: they read angle signatures of different sizes {bins}; "
                         "predict them separately")
    return bins[0] if bins else 0


def identity_view(batch: Batch) -> Batch:
    """The same batch with only the first sequence (the identity order) of each structure.

    A batch collated with every order holds, per structure, its sequences consecutively
    with the identity order first (``StructureDataset`` keeps setting 0 first). The atom
    rows are shared by all sequences, so they are kept as they are.
    """
    struct = batch.seq_struct  # (Q,)
    first = torch.ones_like(struct, dtype=torch.bool)
    first[1:] = struct[1:] != struct[:-1]
    if bool(first.all()):
        return batch
    # (B, M): every other field (atom rows, targets, index) is shared with ``batch``
    return dataclasses.replace(batch, seq_atoms=batch.seq_atoms[first],
                               seq_lengths=batch.seq_lengths[first], seq_struct=struct[first])


def _forward(model: torch.nn.Module, batch: Batch, precision: str) -> np.ndarray:
    """(B, n_outputs) float64 in original units; ``precision`` already resolved."""
    if precision == "int8":
        out = quantized(model)(batch)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(batch)
    return _core(model).denormalize(out.float()).numpy()


def predict_members(
    models: Sequence[torch.nn.Module],
    dataset: StructureDataset,
    indices: np.ndarray | None = None,
    *,
    tta: bool = True,
    batch_size: int = 256,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """Predictions of every model for the structures ``indices`` of ``dataset``.

    Args:
        models: CPU models (``FastGapModel`` or wrappers) that accept a ``Batch``.
        dataset: the structures, collated once per batch for all models.
        indices: (S,) int dataset indices (None = all), predicted in this order.
        tta: average order-dependent models over every distinct atom order; order-free
            models always read the identity order (the same numbers up to rounding).
        batch_size: structures per forward pass (>= 1).
        precision: one of `PRECISIONS`.

    Returns:
        One (S, n_outputs) float64 array per model, rows in ``indices`` order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    precision = resolve_precision(precision)
    if indices is None:
        indices = np.arange(len(dataset))
    indices = np.asarray(indices, dtype=np.int64)
    free = [order_free(m) for m in models]
    all_orders = tta and not all(free)
    sampler = BucketBatchSampler(dataset, indices, batch_size, shuffle=False, tta=all_orders)
    outs = [np.empty((len(indices), _core(m).config.n_outputs)) for m in models]
    where = np.full(len(dataset), -1, dtype=np.int64)
    where[indices] = np.arange(len(indices))
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.inference_mode():
            for batch in make_loader(dataset, sampler):
                rows = where[batch.index.numpy()]
                ident = identity_view(batch) if all_orders and any(free) else batch
                for model, is_free, out in zip(models, free, outs):
                    out[rows] = _forward(model, ident if is_free else batch, precision)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    return outs
