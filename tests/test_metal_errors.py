"""scripts/metal_errors.py: error rates of the metal call by cell size and by gap."""

from __future__ import annotations

import numpy as np
import pytest


def test_error_table_counts_each_kind_of_miss(load_script) -> None:
    script = load_script("metal_errors")
    gap = np.array([0.0, 0.0, 0.3, 1.5, 0.0, 2.5])
    p_metal = np.array([0.9, 0.2, 0.6, 0.1, 0.5, 0.49])
    n_atoms = np.array([2, 2, 2, 20, 20, 20])
    table = script.error_table(p_metal, gap, n_atoms)
    assert table["n"] == 6 and table["accuracy"] == pytest.approx(4 / 6)
    small, mid = table["by_atoms"]
    assert (small["atoms"], small["n"], mid["atoms"], mid["n"]) == ("1-2", 3, "17-32", 3)
    # 1-2 atoms: metals 0.9 (right) and 0.2 (called gapped); gapped 0.3 eV at 0.6 (called metal)
    assert small["metals_called_gapped"] == 0.5 and small["gapped_called_metal"] == 1.0
    # 17-32 atoms: p_metal exactly 0.5 is a metal call (right); both gapped ones called gapped
    assert mid["metals_called_gapped"] == 0.0 and mid["gapped_called_metal"] == 0.0
    by_gap = {r["gap_eV"]: (r["n"], r["called_metal"]) for r in table["by_gap"]}
    assert by_gap["0.0-0.5"] == (1, 1.0) and by_gap["1.0-2.0"] == (1, 0.0)
    assert by_gap["2.0-inf"] == (1, 0.0) and by_gap["0.5-1.0"] == (0, None)
