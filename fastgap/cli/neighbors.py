"""``fastgap neighbors``: print the ordered neighbour lists of the structures in one file."""

from __future__ import annotations

import argparse

import numpy as np

from fastgap.neighbors import NeighborList

help = "print the k nearest neighbours of every atom (contract order) of a structure file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="structure file (CIF, POSCAR, extxyz, JSON-lines, ...)")
    parser.add_argument("-k", type=int, default=19, help="neighbours per atom (default 19)")
    parser.add_argument("--backend", default="auto",
                        help="auto (= cpp), cpp, numba or reference")
    parser.add_argument("--images", action="store_true",
                        help="also print neighbour index and lattice image of each entry")


def format_lists(numbers: np.ndarray, nl: NeighborList, images: bool = False) -> str:
    """One line per atom: 'i Z: Z@distance ...' (distances in Å, padding omitted)."""
    from ase.data import chemical_symbols

    lines = []
    for i, z in enumerate(numbers):
        entries = []
        for m in range(int(nl.counts[i])):
            entry = f"{chemical_symbols[nl.numbers[i, m]]}@{nl.distances[i, m]:.4f}"
            if images:
                entry += f"[{nl.indices[i, m]} {tuple(int(x) for x in nl.images[i, m])}]"
            entries.append(entry)
        lines.append(f"{i:4d} {chemical_symbols[int(z)]:<2}: " + " ".join(entries))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fastgap.neighbors import neighbor_lists
    from fastgap.readers import read_structures

    for structure in read_structures([args.path]):
        nl = neighbor_lists(structure.lattice, structure.frac_coords, structure.numbers,
                            k=args.k, pbc=structure.pbc, backend=args.backend)
        print(f"# {structure.id}: {structure.n_atoms} atoms, k={args.k}, distances in Å")
        print(format_lists(structure.numbers, nl, images=args.images))
    return 0
