"""A whole batch of a ``StructureDataset`` in a few array operations.

``gather_batch(dataset, items)`` returns what ``collate([dataset[i] for i in items])``
returns, equal in every field and dtype (tested), without building one dict per
structure: the DataLoader calls it through ``StructureDataset.__getitems__``. Per
structure it costs a few list appends (the orders each item asks for); every tensor is
one gather over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastgap.data import ALL_VARIANTS, Batch
from fastgap.features import row_ranges

if TYPE_CHECKING:
    from fastgap.data import StructureDataset


def _sequences(ds: StructureDataset, idx: np.ndarray, variants: Sequence[int],
               offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seq_atoms (Q, M), seq_lengths (Q,), seq_struct (Q,)): every requested order of
    every structure, its local rows shifted by the structure's batch offset, 0-padded."""
    struct, setting = [], []
    for b, (i, v) in enumerate(zip(idx.tolist(), variants)):
        chosen = ds.variants[i] if v == ALL_VARIANTS else ds.variants[i][v:v + 1]
        if len(chosen) != 1 and v != ALL_VARIANTS:
            raise IndexError(f"variant {v} of structure {i}: it has {len(ds.variants[i])}")
        struct.extend([b] * len(chosen))
        setting.extend(chosen)
    q_struct = np.asarray(struct, dtype=np.int64)  # (Q,)
    q_idx = idx[q_struct]
    lengths = ds.n_atoms[q_idx].astype(np.int64)  # (Q,)
    steps = np.arange(int(lengths.max()), dtype=np.int64)
    valid = steps[None, :] < lengths[:, None]  # (Q, M)
    cols = np.where(valid, ds.atom_ptr[q_idx][:, None] + steps[None, :], 0)
    local = ds.orders.numpy()[np.asarray(setting, dtype=np.int64)[:, None], cols]  # (Q, M)
    seq = np.where(valid, local + offsets[q_struct][:, None], 0)
    return torch.as_tensor(seq), torch.as_tensor(lengths), torch.as_tensor(q_struct)


def gather_batch(ds: StructureDataset, items: Sequence[Any]) -> Batch:
    """The ``Batch`` of ``items`` (dataset indices, or ``(index, variant)`` pairs)."""
    if len(items) == 0:
        raise ValueError("items: expected at least one dataset item, got none")
    pairs = [(it, 0) if isinstance(it, (int, np.integer)) else it for it in items]
    idx = np.asarray([int(i) for i, _ in pairs], dtype=np.int64)  # (B,)
    if idx.min() < 0 or idx.max() >= len(ds):
        raise IndexError(f"items: dataset indices must be in [0, {len(ds)})")
    rows, offsets = row_ranges(ds.rep_ptr, idx)
    rows_t = torch.as_tensor(rows)
    nbr_rows = None
    if ds.round_entries is not None:
        rows2, offsets2 = row_ranges(ds.round_ptr, idx)
        entries = ds.round_entries[torch.as_tensor(rows2)]  # (N2, L) structure-local rows
        shift = torch.as_tensor(np.repeat(offsets[:-1], np.diff(offsets2)))[:, None]
        nbr_rows = torch.where(entries >= 0, entries + shift, len(rows))  # padding -> row N
        offsets = offsets2  # sequences index the round-2 rows
    seq_atoms, seq_lengths, seq_struct = _sequences(ds, idx, [v for _, v in pairs], offsets)
    idx_t = torch.as_tensor(idx)
    return Batch(
        atom_numbers=ds.numbers[rows_t],
        atom_distances=ds.distances[rows_t],
        atom_lengths=ds.lengths[rows_t],
        seq_atoms=seq_atoms,
        seq_lengths=seq_lengths,
        seq_struct=seq_struct,
        targets=ds.targets[idx_t],
        index=idx_t,
        atom_nbr_rows=nbr_rows,
        atom_angles=None if ds.angles is None else ds.angles[rows_t],
    )
