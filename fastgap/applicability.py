"""Which inputs a model bundle can predict: structures with elements above every member's
training range, or of a periodicity kind (`fastgap.domain`) no member was trained on, become
rejects with the reason (`fastgap.screening.predict_chunk`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastgap.domain import (
    KINDS,
    PERIODICITY_KEY,
    check_counts,
    describe,
    outside,
    periodicity_kinds,
    shared_kinds,
)
from fastgap.structures import ELEMENTS, Reject

if TYPE_CHECKING:
    from fastgap.ensemble import Bundle
    from fastgap.features import FeaturizedBatch


def trained_max_z(bundle: Bundle) -> int:
    """Largest atomic number every member was trained on (its ``max_z`` filter or embedding)."""
    limits = []
    for m in bundle.members:
        limit = m.meta.get("train_config", {}).get("max_z")
        embed = int(m.model.config.max_z)
        limits.append(min(int(limit), embed) if limit else embed)
    return min(limits)


def untrained_elements(batch: FeaturizedBatch, max_z: int) -> tuple[np.ndarray, list[Reject]]:
    """(S,) bool rows a model can predict; structures with elements above ``max_z`` -> rejects."""
    zmax = np.zeros(batch.n_structures, dtype=np.int64)
    if batch.n_atoms:
        zmax = np.maximum.reduceat(batch.numbers.astype(np.int64), batch.atom_ptr[:-1])
    keep = zmax <= max_z
    rejects = [
        Reject(str(batch.ids[i]), str(batch.sources[i]),
               f"numbers: element {ELEMENTS[int(zmax[i]) - 1]} (Z={int(zmax[i])}) is outside "
               f"the model's training elements (Z <= {max_z})")
        for i in np.flatnonzero(~keep)
    ]
    return keep, rejects


def trained_periodicity(bundle: Bundle) -> tuple[set[str] | None, list[dict[str, int]]]:
    """(kinds every member was trained on, or None if any member's is unknown; the counts).

    A member's counts come from its checkpoint metadata, else from the bundle card's
    provenance entry for its file (`fastgap.bundle_card.training_periodicity`).
    """
    provenance = bundle.card.get("provenance", {})
    counts = []
    for m in bundle.members:
        found = m.meta.get(PERIODICITY_KEY) or provenance.get(m.path.name, {}).get(PERIODICITY_KEY)
        counts.append(None if found is None else check_counts(found, f"{m.path.name}: "
                                                                      f"{PERIODICITY_KEY}"))
    return shared_kinds(counts), [c for c in counts if c is not None]


def untrained_periodicity(batch: FeaturizedBatch, bundle: Bundle,
                           keep: np.ndarray) -> tuple[np.ndarray, list[Reject]]:
    """Rows of ``keep`` whose periodicity kind every member was trained on; the rest of
    ``keep`` -> rejects naming the kind and the training data (no check when unknown)."""
    allowed, counts = trained_periodicity(bundle)
    if allowed is None:
        return keep, []
    bad = outside(batch.pbc, allowed) & keep
    kinds = periodicity_kinds(batch.pbc)
    trained = ", ".join(k for k in KINDS if k in allowed) or "no"
    rejects = [
        Reject(str(batch.ids[i]), str(batch.sources[i]),
               f"pbc: {KINDS[kinds[i]]} input (pbc {tuple(bool(x) for x in batch.pbc[i])}), "
               f"but the model was trained on {trained} structures only (training structures "
               f"per member: {describe(counts)}); --any-periodicity predicts it anyway")
        for i in np.flatnonzero(bad)
    ]
    return keep & ~bad, rejects
