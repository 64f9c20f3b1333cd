"""Periodicity kinds of structures and of a model's training data (`fastgap.domain`)."""

from __future__ import annotations

import numpy as np
import pytest

from fastgap.domain import (
    check_counts,
    describe,
    outside,
    periodicity_counts,
    periodicity_kinds,
    shared_kinds,
)

PBC = np.array([[True, True, True], [False, False, False], [True, True, False],
                [True, False, False], [True, True, True]])


def test_kinds_and_counts() -> None:
    assert periodicity_kinds(PBC).tolist() == [0, 2, 1, 1, 0]
    assert periodicity_counts(PBC) == {"periodic": 2, "partial": 2, "molecule": 1}
    assert periodicity_counts(np.zeros((0, 3), bool)) == {"periodic": 0, "partial": 0,
                                                          "molecule": 0}


def test_shared_kinds_is_what_every_member_saw() -> None:
    crystals = {"periodic": 10, "partial": 0, "molecule": 0}
    both = {"periodic": 5, "partial": 0, "molecule": 7}
    assert shared_kinds([crystals, both]) == {"periodic"}
    assert shared_kinds([both]) == {"periodic", "molecule"}
    assert shared_kinds([crystals, None]) is None  # one member unknown: no check
    assert shared_kinds([]) is None
    assert outside(PBC, {"periodic"}).tolist() == [False, True, True, True, False]
    assert describe([crystals, both]) == "5-10 periodic, 0 partial, 0-7 molecule"


@pytest.mark.parametrize("bad", [[1, 2, 3], {"periodic": 1}, {"periodic": -1, "partial": 0,
                                                              "molecule": 0},
                                 {"periodic": 1.5, "partial": 0, "molecule": 0}])
def test_recorded_counts_are_validated(bad) -> None:
    with pytest.raises(ValueError, match="card: expected counts of"):
        check_counts(bad, "card")
