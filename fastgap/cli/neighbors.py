"""``fastgap neighbors``: print the ordered neighbour lists of the structures in one file."""

from __future__ import annotations

import argparse

import numpy as np

help = "print the k nearest neighbours of every atom (contract order) of a structure file"

_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="structure file (CIF, POSCAR, extxyz, JSON-lines, ...)")
    parser.add_argument("-k", type=int, default=19, help="neighbours per atom (default 19)")
    parser.add_argument("--backend", default="auto",
                        help="auto (= cpp), cpp, numba or reference")
    parser.add_argument("--images", action="store_true",
                        help="also print neighbour index and lattice image of each entry")


def format_lists(numbers: np.ndarray, nl, images: bool = False) -> str:  # noqa: ANN001
    """One line per atom: 'i Z: Z@distance ...' (distances in Å, padding omitted)."""
    lines = []
    for i, z in enumerate(numbers):
        entries = []
        for m in range(int(nl.counts[i])):
            entry = f"{_SYMBOLS[nl.numbers[i, m]]}@{nl.distances[i, m]:.4f}"
            if images:
                entry += f"[{nl.indices[i, m]} {tuple(int(x) for x in nl.images[i, m])}]"
            entries.append(entry)
        lines.append(f"{i:4d} {_SYMBOLS[int(z)]:<2}: " + " ".join(entries))
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
