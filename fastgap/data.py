"""Torch data path: a Dataset over a ``FeaturizedBatch``, the masked collate and a sampler.

Every atom contributes one row of the design's 20-entry list: entry 0 is the atom itself
(its atomic number, distance 0), entries 1..k its neighbours from ``nbr_numbers`` /
``nbr_distances``. Rows shorter than ``1 + k`` (molecules, small clusters) are padded; the
padding is described by ``atom_lengths`` and never read by the model.

Atom order for the per-structure LSTM: fractional coordinates wrapped into [0, 1) along
periodic axes, rounded to ``ORDER_TOL`` (1e-4, fractional units) so that numerically equal
coordinates tie, then sorted lexicographically by (x, y, z) with the atom index as the final
tie-break. The same is done for each axis swap in ``AXIS_SETTINGS``; settings that give an
order identical to an earlier one are dropped, so every structure has 1..4 distinct orders
("variants"). A variant is selected per item by the sampler, never inside the worker.

Equivalent atoms share one row: atoms of the same structure whose 20-entry lists agree
(same atomic numbers, distances equal after rounding to ``SHARE_TOL`` = 1e-4 Å) are
symmetry-equivalent in practice, and their per-atom LSTM outputs are identical, so a
structure's atom rows are its distinct lists and its sequences index them. On the
Materials Project band-gap set this cuts the per-atom LSTM work by about 2.8x. Sharing
never crosses structures, so a structure's prediction does not depend on its batch.

Neighbour rows (``rounds > 1``): when the data carries ``nbr_indices`` (store schema 2),
every atom also gets a round-2 row: the batch rows of the atoms its entries are
(``Batch.atom_nbr_rows``), with the sequences indexing round-2 rows. The round-1 sharing
key is not sufficient for round 2, so round-2 rows are shared under a refined key (atoms
whose entries point to the same round-1 rows), see ``fastgap.rows``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastgap.rows import SHARE_TOL, entry_atoms, round_rows, shared_rows  # noqa: F401

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch

# identity, swap xy, swap yz, swap xz (permutations of the fractional axes)
AXIS_SETTINGS: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (1, 0, 2), (0, 2, 1), (2, 1, 0))
ORDER_TOL = 1e-4  # fractional units: coordinates closer than this sort as equal

ALL_VARIANTS = -1  # item variant meaning "every distinct order of this structure"


def atom_orders(
    frac_coords: np.ndarray, atom_ptr: np.ndarray, pbc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct per-structure atom orders over ``AXIS_SETTINGS``.

    Args:
        frac_coords: (A, 3) float, fractional coordinates.
        atom_ptr: (S+1,) int64 atom offsets.
        pbc: (S, 3) bool; coordinates are wrapped only along periodic axes.

    Returns:
        orders: (len(AXIS_SETTINGS), A) int64 local atom indices; row v is setting v's
            order, concatenated over structures.
        keep: (S, len(AXIS_SETTINGS)) bool, False where a setting repeats an earlier order
            (column 0 is always True).
    """
    atom_ptr = np.asarray(atom_ptr, dtype=np.int64)
    counts = np.diff(atom_ptr)
    n_struct = len(counts)
    struct_of_atom = np.repeat(np.arange(n_struct), counts)
    frac = np.asarray(frac_coords, dtype=np.float64)
    wrapped = np.where(np.asarray(pbc, dtype=bool)[struct_of_atom], frac % 1.0, frac)
    key = np.round(wrapped / ORDER_TOL).astype(np.int64)  # (A, 3)
    period = round(1.0 / ORDER_TOL)
    key = np.where(np.asarray(pbc, dtype=bool)[struct_of_atom], key % period, key)  # 1-eps -> 0
    local = np.arange(len(frac), dtype=np.int64) - atom_ptr[struct_of_atom]
    orders = np.empty((len(AXIS_SETTINGS), len(frac)), dtype=np.int64)
    for v, (i, j, m) in enumerate(AXIS_SETTINGS):
        # lexsort: last key is primary -> structure, then x', y', z', atom index
        perm = np.lexsort((local, key[:, m], key[:, j], key[:, i], struct_of_atom))
        orders[v] = local[perm]
    keep = np.ones((n_struct, len(AXIS_SETTINGS)), dtype=bool)
    starts = atom_ptr[:-1][counts > 0]
    for v in range(1, len(AXIS_SETTINGS)):
        for u in range(v):
            same = np.ones(n_struct, dtype=bool)
            same[counts > 0] = np.logical_and.reduceat(orders[v] == orders[u], starts)
            keep[:, v] &= ~same
    return orders, keep


@dataclass
class Batch:
    """A collated batch of B structures, N atoms and Q atom sequences (variants).

    Fields:
        atom_numbers: (N, L) int64 atomic numbers, column 0 = the centre; 0 past the length.
        atom_distances: (N, L) float32 Å, column 0 = 0; 0 past the length.
        atom_lengths: (N,) int64 valid entries per row (1 + neighbour count), >= 1.
        seq_atoms: (Q, M) int64 row indices into the atom rows, in sequence order; 0 past
            the length (masked by ``seq_lengths``).
        seq_lengths: (Q,) int64 atoms per sequence, >= 1.
        seq_struct: (Q,) int64 structure (0..B-1) each sequence belongs to.
        targets: (B, T) float32 target values in original units, NaN = missing.
        index: (B,) int64 dataset index of each structure.
        atom_nbr_rows: (N2, L) int64 or None. None when the data has no ``nbr_indices``;
            then ``seq_atoms`` index the N atom rows. Otherwise one row per round-2 row:
            the atom row (0..N-1) of every entry, column 0 = the atom's own row, N (a dummy)
            past the length; ``seq_atoms`` then index these N2 round-2 rows.
        atom_angles: (N, L, B) float32 or None: each entry's angle signature
            (``fastgap.angles``, column 0 and padding zero) when the data was built with
            ``angle_bins = B``.
    """

    atom_numbers: torch.Tensor
    atom_distances: torch.Tensor
    atom_lengths: torch.Tensor
    seq_atoms: torch.Tensor
    seq_lengths: torch.Tensor
    seq_struct: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor
    atom_nbr_rows: torch.Tensor | None = None
    atom_angles: torch.Tensor | None = None

    @property
    def n_structures(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Copy every tensor to ``device`` (``non_blocking`` pairs with pinned memory)."""
        return Batch(**{
            name: None if value is None else value.to(device, non_blocking=non_blocking)
            for name, value in self._tensors()
        })  # fmt: skip

    def pin_memory(self) -> Batch:
        """Pinned copy, called by DataLoader(pin_memory=True)."""
        return Batch(**{n: None if v is None else v.pin_memory() for n, v in self._tensors()})

    def _tensors(self) -> list[tuple[str, torch.Tensor | None]]:
        return [(name, getattr(self, name)) for name in self.__dataclass_fields__]


class StructureDataset(torch.utils.data.Dataset):
    """In-memory dataset over a ``FeaturizedBatch``; item = (structure index, variant).

    ``variant`` is an index into the structure's distinct orders (0 = identity setting) or
    ``ALL_VARIANTS``. ``targets`` names columns of ``featurized.properties``; ``derived``
    maps extra target names to (S,) float64 arrays computed by the caller (e.g. ``is_metal``).
    ``share_equivalent`` lets atoms with identical lists share one row (see module doc);
    with ``nbr_indices`` in the data, round-2 rows are shared under the refined key.
    ``neighbour_rows=False`` skips the round-2 rows even when the data has ``nbr_indices``
    (inference with ``rounds=1`` models only, which give the same numbers without them).
    ``orders=False`` skips the axis-swap orders: every structure has one sequence, its
    atoms in stored order (inference with order-free pooling only, ``"attention"`` /
    ``"mean"``, whose outputs do not depend on the order beyond float rounding).
    ``angle_bins`` > 0 adds every entry's angle signature (``fastgap.angles``, for models
    with ``angle_bins``); atoms then share a row only if their signatures agree too.
    """

    def __init__(
        self,
        featurized: FeaturizedBatch,
        targets: Sequence[str] = (),
        derived: dict[str, np.ndarray] | None = None,
        *,
        share_equivalent: bool = True,
        neighbour_rows: bool = True,
        orders: bool = True,
        angle_bins: int = 0,
    ) -> None:
        derived = derived or {}
        ptr = np.asarray(featurized.atom_ptr, dtype=np.int64)
        n_struct = len(ptr) - 1
        columns = []
        for name in targets:
            if name in derived:
                columns.append(np.asarray(derived[name], dtype=np.float64))
            elif name in featurized.properties:
                columns.append(np.asarray(featurized.properties[name], dtype=np.float64))
            else:
                known = sorted([*featurized.properties, *derived])
                raise ValueError(f"targets: unknown target {name!r}; available: {known}")
        table = np.stack(columns, axis=1) if columns else np.zeros((n_struct, 0))
        self.targets = torch.as_tensor(table, dtype=torch.float32)  # (S, T)
        self.atom_ptr = ptr
        centre = np.asarray(featurized.numbers, dtype=np.int64)[:, None]
        nbr = np.asarray(featurized.nbr_numbers, dtype=np.int64)
        self.numbers = torch.as_tensor(np.concatenate([centre, nbr], axis=1))  # (A, 1+k)
        zeros = np.zeros((len(centre), 1), dtype=np.float32)
        dist = np.asarray(featurized.nbr_distances, dtype=np.float32)
        self.distances = torch.as_tensor(np.concatenate([zeros, dist], axis=1))  # (A, 1+k)
        self.lengths = torch.as_tensor(np.asarray(featurized.nbr_counts, dtype=np.int64) + 1)
        struct_of_atom = np.repeat(np.arange(n_struct, dtype=np.int64), np.diff(ptr))
        if orders:
            orders, keep = atom_orders(featurized.frac_coords, ptr, featurized.pbc)
        else:  # one sequence per structure: the stored atom order
            orders = (np.arange(len(centre), dtype=np.int64) - ptr[:-1][struct_of_atom])[None]
            keep = np.ones((n_struct, 1), dtype=bool)
        angles = None
        if angle_bins:
            from fastgap.angles import entry_angles

            angles = entry_angles(featurized, angle_bins)  # (A, 1+k, B)
        if share_equivalent:
            is_rep, slot = shared_rows(
                self.numbers.numpy(), self.distances.numpy(), self.lengths.numpy(), ptr,
                extra=angles,
            )
        else:  # every atom keeps its own row
            is_rep = np.ones(len(centre), dtype=bool)
            slot = np.arange(len(centre), dtype=np.int64) - np.repeat(ptr[:-1], np.diff(ptr))
        self.rep_ptr = _row_ptr(is_rep, struct_of_atom, n_struct)
        self.round_ptr = self.round_entries = None
        if neighbour_rows and featurized.nbr_indices is not None:
            entries = entry_atoms(
                self.numbers.numpy(), self.distances.numpy(), self.lengths.numpy(),
                np.asarray(featurized.nbr_indices, dtype=np.int64), ptr,
            )  # fmt: skip
            is_rep2, slot, entry_rows = round_rows(entries, slot, ptr, share=share_equivalent)
            self.round_ptr = _row_ptr(is_rep2, struct_of_atom, n_struct)
            # (R2, 1+k) structure-local round-1 row of every entry, -1 past the length
            self.round_entries = torch.as_tensor(entry_rows[is_rep2])
        keep_rows = np.flatnonzero(is_rep)
        self.numbers = self.numbers[keep_rows]  # (R, 1+k), R kept rows
        self.distances = self.distances[keep_rows]
        self.lengths = self.lengths[keep_rows]
        self.angles = None if angles is None else torch.as_tensor(angles[keep_rows])
        # orders hold local atom indices; map each to its structure-local (round-2) row
        orders = slot[orders + ptr[:-1][struct_of_atom]]
        self.orders = torch.as_tensor(orders)  # (V_all, A) local row index of each atom
        if keep.shape[1] == 1:  # one setting each (orders=False): one shared, read-only array
            identity = np.zeros(1, dtype=np.int64)
            identity.flags.writeable = False
            self.variants = [identity] * n_struct
        else:
            self.variants = [np.flatnonzero(row) for row in keep]  # settings kept per structure
        self.n_variants = keep.sum(axis=1)  # (S,)
        self.n_atoms = np.diff(ptr)  # (S,)

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        idx, variant = (item, 0) if isinstance(item, (int, np.integer)) else item
        a, b = int(self.atom_ptr[idx]), int(self.atom_ptr[idx + 1])
        r0, r1 = int(self.rep_ptr[idx]), int(self.rep_ptr[idx + 1])
        settings = self.variants[idx] if variant == ALL_VARIANTS else [self.variants[idx][variant]]
        item = {
            "index": int(idx),
            "numbers": self.numbers[r0:r1],
            "distances": self.distances[r0:r1],
            "lengths": self.lengths[r0:r1],
            "orders": [self.orders[s, a:b] for s in settings],
            "targets": self.targets[idx],
        }
        if self.round_entries is not None:
            q0, q1 = int(self.round_ptr[idx]), int(self.round_ptr[idx + 1])
            item["round_entries"] = self.round_entries[q0:q1]
        if self.angles is not None:
            item["angles"] = self.angles[r0:r1]
        return item

    def __getitems__(self, items: Sequence[tuple[int, int] | int]) -> Batch:
        """The collated ``Batch`` of ``items`` at once (`fastgap.gather`); the DataLoader
        calls this instead of ``__getitem__`` per item, and ``collate`` passes it on."""
        from fastgap.gather import gather_batch

        return gather_batch(self, items)


def _row_ptr(is_rep: np.ndarray, struct_of_atom: np.ndarray, n_struct: int) -> np.ndarray:
    """(S+1,) int64 offsets of each structure's kept rows."""
    kept = np.bincount(struct_of_atom[is_rep], minlength=n_struct)
    return np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)


def collate(items: Sequence[dict[str, Any]] | Batch) -> Batch:
    """Concatenate dataset items into a ``Batch`` (atoms once, one sequence per order).

    A ``Batch`` (what ``StructureDataset.__getitems__`` gives the DataLoader) is returned as
    it is.
    """
    if isinstance(items, Batch):
        return items
    if not items:
        raise ValueError("items: expected at least one dataset item, got none")
    numbers = torch.cat([it["numbers"] for it in items])  # (N, L)
    offsets = np.cumsum([0] + [len(it["numbers"]) for it in items])
    nbr_rows = None
    if "round_entries" in items[0]:
        nbr_rows = torch.cat([
            torch.where(it["round_entries"] >= 0, it["round_entries"] + int(offsets[b]),
                        len(numbers))  # padding -> the dummy row N
            for b, it in enumerate(items)
        ])  # (N2, L)
        offsets = np.cumsum([0] + [len(it["round_entries"]) for it in items])
    seqs, struct = [], []
    for b, it in enumerate(items):
        for order in it["orders"]:
            seqs.append(order + int(offsets[b]))
            struct.append(b)
    seq_lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    seq_atoms = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # (Q, M), 0-padded
    return Batch(
        atom_numbers=numbers,
        atom_distances=torch.cat([it["distances"] for it in items]),
        atom_lengths=torch.cat([it["lengths"] for it in items]),
        seq_atoms=seq_atoms,
        seq_lengths=seq_lengths,
        seq_struct=torch.tensor(struct, dtype=torch.int64),
        targets=torch.stack([it["targets"] for it in items]),
        index=torch.tensor([it["index"] for it in items], dtype=torch.int64),
        atom_nbr_rows=nbr_rows,
        atom_angles=torch.cat([it["angles"] for it in items]) if "angles" in items[0] else None,
    )


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of structures of similar size, shuffled with a seeded ``torch.Generator``.

    Each epoch: shuffle the indices, cut them into chunks of ``bucket_factor * batch_size``,
    sort each chunk by atom count, cut into batches, shuffle the batch order. Items are
    ``(index, variant)``: a random variant when ``augment``, all variants when ``tta``,
    else the identity order. ``shard=(rank, world)`` keeps every ``world``-th batch (DDP),
    truncated so every rank gets the same number of batches.
    """

    def __init__(
        self,
        dataset: StructureDataset,
        indices: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        augment: bool = False,
        tta: bool = False,
        bucket_factor: int = 50,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
        if augment and tta:
            raise ValueError("augment, tta: expected at most one of them true, got both")
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.augment, self.tta = shuffle, seed, augment, tta
        self.bucket_factor = bucket_factor
        self.rank, self.world = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle is produced (same on every DDP rank)."""
        self.epoch = epoch

    def _batches(self) -> list[list[tuple[int, int]]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        idx = self.indices
        if self.shuffle:
            idx = idx[torch.randperm(len(idx), generator=gen).numpy()]
        chunk = self.batch_size * self.bucket_factor
        batches = []
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            part = part[np.argsort(self.dataset.n_atoms[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        if self.world > 1:
            per_rank = len(batches) // self.world
            batches = batches[self.rank :: self.world][:per_rank]
        return [self._items(b, gen) for b in batches]

    def _items(self, batch: np.ndarray, gen: torch.Generator) -> list[tuple[int, int]]:
        if self.tta:
            return [(int(i), ALL_VARIANTS) for i in batch]
        if not self.augment:
            return [(int(i), 0) for i in batch]
        n_var = torch.as_tensor(self.dataset.n_variants[batch])
        pick = (torch.rand(len(batch), generator=gen) * n_var).long().clamp_max(n_var - 1)
        return [(int(i), int(v)) for i, v in zip(batch, pick)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def make_loader(
    dataset: StructureDataset,
    sampler: BucketBatchSampler,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """DataLoader with the masked collate; workers and pinned memory optional."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
