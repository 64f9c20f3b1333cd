"""Which inputs a model bundle can predict: structures with elements above every member's
training range or absent from a member's training structures, or of a periodicity kind
(`fastgap.domain`) no member was trained on, become rejects with the reason
(`fastgap.screening.predict_chunk`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastgap.domain import (
    ELEMENTS_KEY,
    KINDS,
    PERIODICITY_KEY,
    check_counts,
    check_elements,
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


def trained_elements(bundle: Bundle) -> set[int] | None:
    """Atomic numbers in every member's training structures, when the bundle card restricts
    its inputs to them (each member's provenance entry lists ``training_elements``, as the
    ``qm9`` bundle's does); None otherwise (then only ``max_z`` limits the elements).

    Checkpoints record the elements too (metadata ``training_elements``), but a run or a
    bundle without the card entry is not restricted by them.
    """
    provenance = bundle.card.get("provenance", {})
    found = []
    for m in bundle.members:
        elements = provenance.get(m.path.name, {}).get(ELEMENTS_KEY)
        if elements is None:
            return None
        found.append(set(check_elements(elements, f"{m.path.name}: {ELEMENTS_KEY}")))
    return set.intersection(*found) if found else None


def _element_list(elements: set[int]) -> str:
    """'H, C, N, O, F' for a few elements, '83 elements, Z 1-94' for many."""
    if len(elements) <= 12:
        return ", ".join(ELEMENTS[z - 1] for z in sorted(elements))
    return f"{len(elements)} elements, Z {min(elements)}-{max(elements)}"


def untrained_elements(batch: FeaturizedBatch, max_z: int,
                       elements: set[int] | None = None) -> tuple[np.ndarray, list[Reject]]:
    """(S,) bool rows a model can predict; structures with elements above ``max_z``, or
    (given ``elements``) outside that set of atomic numbers -> rejects naming the element."""
    numbers = batch.numbers.astype(np.int64)
    bad = numbers > max_z
    if elements is not None:
        bad |= ~np.isin(numbers, sorted(elements))
    struct = np.repeat(np.arange(batch.n_structures), np.diff(batch.atom_ptr))  # (A,)
    keep = np.ones(batch.n_structures, dtype=bool)
    keep[struct[bad]] = False
    first_bad = {}
    for atom in np.flatnonzero(bad)[::-1]:  # reversed: the first bad atom of each wins
        first_bad[int(struct[atom])] = int(numbers[atom])
    rejects = []
    for i in np.flatnonzero(~keep):
        z = first_bad[int(i)]
        allowed = (f"Z <= {max_z}" if z > max_z or elements is None
                   else _element_list(elements))
        rejects.append(Reject(str(batch.ids[i]), str(batch.sources[i]),
                              f"numbers: element {ELEMENTS[z - 1]} (Z={z}) is outside the "
                              f"model's training elements ({allowed})"))
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
