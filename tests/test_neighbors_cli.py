"""``fastgap neighbors`` prints the contract-ordered lists of a structure file."""

from __future__ import annotations

from pathlib import Path

from fastgap.cli import main

DATA = Path(__file__).parent / "data" / "mp_sample.jsonl"


def test_prints_lists(capsys):
    assert main(["neighbors", str(DATA), "-k", "3", "--backend", "numba", "--images"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# mp-1: 1 atoms, k=3, distances in Å"
    assert out[1].startswith("   0 Cs: Cs@5.2914[0 (")
    assert out[3].startswith("   0 Ba: Te@3.5449")
    assert sum(line.startswith("#") for line in out) == 5


def test_bad_k_is_reported(capsys):
    assert main(["neighbors", str(DATA), "-k", "0", "--backend", "numba"]) == 2
    assert "k: expected k >= 1" in capsys.readouterr().err
