"""The shipped element descriptor table (``fastgap.elements``)."""

from __future__ import annotations

import numpy as np
import pytest

from fastgap.elements import NUMERIC, TABLE_PATH, descriptor_names, element_descriptors


def test_table_names_its_source_and_covers_every_element() -> None:
    first = TABLE_PATH.read_text().splitlines()[0]
    assert first.startswith("# source: pymatgen")
    table = element_descriptors()
    assert table.shape == (119, len(descriptor_names())) and table.dtype == np.float32
    assert np.isfinite(table).all()
    assert (table[0] == 0).all()  # padding row


def test_numeric_columns_are_standardised_and_missing_values_flagged() -> None:
    table = element_descriptors()[1:].astype(np.float64)
    numeric = table[:, : len(NUMERIC)]
    np.testing.assert_allclose(numeric.mean(axis=0), 0.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(numeric.std(axis=0), 1.0, rtol=0, atol=1e-5)
    names = descriptor_names()
    blocks = table[:, [names.index(f"block_{b}") for b in "spdf"]]
    np.testing.assert_array_equal(blocks.sum(axis=1), 1.0)
    flag = names.index("electronegativity_missing")
    # rows are Z - 1 here: H has a Pauling electronegativity, He and Og have none
    assert (table[0, flag], table[1, flag], table[117, flag]) == (0.0, 1.0, 1.0)
    oxygen, fluorine = table[7], table[8]
    en = names.index("electronegativity")
    assert fluorine[en] > oxygen[en]  # the order survives standardisation


def test_max_z_truncates_the_rows() -> None:
    full = element_descriptors()
    np.testing.assert_array_equal(element_descriptors(30), full[:31])


@pytest.mark.parametrize("max_z", [0, 119, 3.0, True])
def test_max_z_validation(max_z) -> None:
    with pytest.raises(ValueError, match=r"max_z: expected an int in 1\.\.118"):
        element_descriptors(max_z)
