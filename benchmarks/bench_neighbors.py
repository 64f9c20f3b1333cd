"""Neighbour-list throughput: fastgap (C++, Numba) against pymatgen, vesin and matscipy.

Usage (from the repository root):
    python benchmarks/bench_neighbors.py [--limit N] [--path structures.jsonl.gz]
        [--peer-limit 2000] [--repeats 5] [--write-results]

The Materials Project structures are converted to NumPy arrays once; every method is then
timed on the whole job "arrays in, per-atom lists sorted and truncated to k out", in one
call (every list of the dataset in memory at once: ~500 bytes per atom) and streamed in
chunks of 1000 structures as `fastgap featurize` does. fastgap
applies the full contract (tie groups, padding, images); the peers return all pairs within a
cutoff, which is grown until every atom has k neighbours (and the k-th one's tie group is
complete), then sorted per atom and truncated. Peers run on the first --peer-limit
structures; fastgap runs on those too and on all loaded structures. One warm-up, then the
median of --repeats runs. The (numbers, distances) sequences of fastgap are checked against
pymatgen's (ordered by the same tie rule) on the peer subset.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO.parent / "shared" / "data" / "mp_gap36k" / "structures.jsonl.gz"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Neighbour lists"
K = 19
SCALING_SIZES = ((4, 4, 4), (5, 5, 5), (5, 5, 10), (10, 10, 5))  # 256 .. 2000 atoms
TIE_TOL = 2.0**-15
CHUNK = 1000  # structures per call in the streamed rows (FeaturizeConfig.chunk_size)


@dataclass
class Batch:
    """Structures as flat arrays: lattices (S, 3, 3) Å, frac (A, 3), numbers (A,) int32,
    atom_ptr (S + 1,) int64, pbc (S, 3) bool."""

    lattices: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray
    atom_ptr: np.ndarray
    pbc: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.atom_ptr[-1])

    def head(self, n_structures: int) -> Batch:
        return self.part(0, n_structures)

    def part(self, lo: int, hi: int) -> Batch:
        """Structures lo..hi-1 (views; atom_ptr rebased to start at 0)."""
        a0, a1 = int(self.atom_ptr[lo]), int(self.atom_ptr[hi])
        return Batch(self.lattices[lo:hi], self.frac[a0:a1], self.numbers[a0:a1],
                     self.atom_ptr[lo:hi + 1] - a0, self.pbc[lo:hi])

    def structure(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self.atom_ptr[s], self.atom_ptr[s + 1]
        return self.lattices[s], self.frac[lo:hi], self.numbers[lo:hi]


def load(path: Path, limit: int | None) -> Batch:
    """Read JSON-lines(.gz) structures (lattice, species, frac_coords) into a `Batch`."""
    from ase.data import atomic_numbers

    lattices, frac, numbers, ptr = [], [], [], [0]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(lattices) >= limit:
                break
            rec = json.loads(line)
            lattices.append(rec["lattice"])
            frac.extend(rec["frac_coords"])
            numbers.extend(atomic_numbers[s] for s in rec["species"])
            ptr.append(len(numbers))
    s = len(lattices)
    return Batch(np.asarray(lattices, dtype=np.float64), np.asarray(frac, dtype=np.float64),
                 np.asarray(numbers, dtype=np.int32), np.asarray(ptr, dtype=np.int64),
                 np.ones((s, 3), dtype=bool))


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """One warm-up call, then the median (wall, process CPU) seconds of `repeats` calls.

    CPU time counts every thread of this process, so on a loaded machine it is the fairer
    per-core figure; wall time includes waiting for the other jobs.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def fastgap_cpp(batch: Batch, threads: int) -> tuple:
    from fastgap import _core

    return _core.knn_batch(batch.lattices, batch.frac, batch.numbers, batch.atom_ptr,
                           batch.pbc, K, threads, TIE_TOL, 0.5)


def fastgap_cpp_chunked(batch: Batch, threads: int, size: int = CHUNK) -> int:
    """The streaming path of `fastgap featurize`: the C++ core on `size` structures at a
    time, each chunk's lists released before the next (as once written to a store), so the
    output memory is reused instead of first-touched. Returns the number of rows made."""
    s = len(batch.lattices)
    return sum(len(fastgap_cpp(batch.part(lo, min(s, lo + size)), threads)[4])
               for lo in range(0, s, size))


def fastgap_api(batch: Batch) -> object:
    """The public path: validation in Python, then the C++ core, 1 thread."""
    import fastgap

    return fastgap.neighbor_lists_batch(batch.lattices, batch.frac, batch.numbers,
                                        batch.atom_ptr, k=K, pbc=batch.pbc, num_threads=1)


def supercell(reps: tuple[int, int, int], seed: int = 0) -> Batch:
    """An fcc Cu supercell (a = 3.6 Å) of 4 * prod(reps) atoms, every atom displaced by up
    to 0.05 Å along each axis (a fixed seed), so ties are rare."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array([(x, y, z) for x in range(reps[0]) for y in range(reps[1])
                     for z in range(reps[2])])
    frac = ((grid[:, None, :] + base[None]) / np.array(reps)).reshape(-1, 3)  # (A, 3)
    lattice = np.diag(3.6 * np.array(reps, dtype=float))
    frac = frac + rng.uniform(-0.05, 0.05, frac.shape) / np.diag(lattice)
    a = len(frac)
    return Batch(lattice[None], frac, np.full(a, 29, np.int32), np.array([0, a], np.int64),
                 np.ones((1, 3), bool))


def scaling(sizes: tuple[tuple[int, int, int], ...], repeats: int) -> list[tuple[int, float, float]]:
    """Rows (atoms, median wall s, median CPU s) of the C++ core on one large cell each."""
    rows = []
    for n in sizes:
        cell = supercell(n)
        wall, cpu = median_seconds(lambda cell=cell: fastgap_cpp(cell, 1), repeats)
        rows.append((cell.n_atoms, wall, cpu))
        print(f"one cell of {cell.n_atoms:6d} atoms: {wall:.4f} s wall, {cpu:.4f} s CPU, "
              f"{cell.n_atoms / cpu:,.0f} atoms/s CPU", flush=True)
    return rows


def fastgap_numba(batch: Batch) -> object:
    import fastgap

    return fastgap.neighbor_lists_batch(batch.lattices, batch.frac, batch.numbers,
                                        batch.atom_ptr, k=K, pbc=batch.pbc, backend="numba",
                                        num_threads=1)


def first_cutoff(lattice: np.ndarray, n_atoms: int) -> float:
    """Radius of a sphere holding k + 1 atoms at the cell's mean density, plus 20 %."""
    volume = abs(np.linalg.det(lattice))
    return 1.2 * (3.0 * (K + 1) * volume / (4.0 * np.pi * n_atoms)) ** (1.0 / 3.0)


def ordered_head(centre: np.ndarray, dist: np.ndarray, nbr_z: np.ndarray, n_atoms: int,
                 cutoff: float) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per atom, (numbers, distances) of the k nearest in contract order; None if the cutoff
    does not contain every atom's k-th tie group."""
    order = np.lexsort((dist, centre))
    centre, dist, nbr_z = centre[order], dist[order], nbr_z[order]
    bounds = np.searchsorted(centre, np.arange(n_atoms + 1))
    out = []
    for i in range(n_atoms):
        d, z = dist[bounds[i]:bounds[i + 1]], nbr_z[bounds[i]:bounds[i + 1]]
        if d.size < K:
            return None
        group = np.concatenate([[0], np.cumsum(np.diff(d) > TIE_TOL)])
        last = d[group == group[K - 1]][-1]
        if last + TIE_TOL >= cutoff:
            return None
        head = np.lexsort((d, z, group))[:K]
        out.append((z[head], d[head]))
    return out


def grow_until_complete(pairs: Callable[[float], tuple], lattice: np.ndarray,
                        numbers: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Call `pairs(cutoff) -> (centre, neighbour, distance)` with a growing cutoff."""
    cutoff = first_cutoff(lattice, len(numbers))
    while True:
        i, j, d = pairs(cutoff)
        head = ordered_head(np.asarray(i), np.asarray(d), numbers[np.asarray(j)],
                            len(numbers), cutoff)
        if head is not None:
            return head
        cutoff *= 1.3


def run_pymatgen(batch: Batch) -> list:
    from pymatgen.core import Lattice, Structure

    out = []
    for s in range(len(batch.lattices)):
        lattice, frac, numbers = batch.structure(s)
        structure = Structure(Lattice(lattice), numbers.tolist(), frac)

        def pairs(r: float, structure: Structure = structure) -> tuple:
            i, j, _, d = structure.get_neighbor_list(r)
            return i, j, d

        out += grow_until_complete(pairs, lattice, numbers)
    return out


def run_vesin(batch: Batch) -> list:
    from vesin import NeighborList

    out = []
    for s in range(len(batch.lattices)):
        lattice, frac, numbers = batch.structure(s)
        points = frac @ lattice

        def pairs(r: float, points: np.ndarray = points, lattice: np.ndarray = lattice) -> tuple:
            nl = NeighborList(cutoff=r, full_list=True, n_threads=1)
            return nl.compute(points=points, box=lattice, periodic=True, quantities="ijd")

        out += grow_until_complete(pairs, lattice, numbers)
    return out


def run_matscipy(batch: Batch) -> list:
    from matscipy.neighbours import neighbour_list

    out = []
    for s in range(len(batch.lattices)):
        lattice, frac, numbers = batch.structure(s)
        points = frac @ lattice

        def pairs(r: float, points: np.ndarray = points, lattice: np.ndarray = lattice) -> tuple:
            return neighbour_list("ijd", positions=points, cell=lattice, pbc=[True] * 3,
                                  cutoff=r)

        out += grow_until_complete(pairs, lattice, numbers)
    return out


def check_against_pymatgen(batch: Batch) -> str:
    """Compare fastgap's (numbers, distances) with pymatgen's, ordered by the same rule."""
    numbers, distances, *_ = fastgap_cpp(batch, 0)
    reference = run_pymatgen(batch)
    worst, mismatched = 0.0, 0
    for i, (z, d) in enumerate(reference):
        worst = max(worst, float(np.abs(distances[i] - d).max()))
        mismatched += int(not np.array_equal(numbers[i], z))
    return (f"{len(reference)} atoms: max |distance difference| {worst:.2e} Å, "
            f"{mismatched} atoms with a different numbers sequence")


def machine_line() -> str:
    from fastgap import _core
    from fastgap.benchmarks_suite.report import cpu_model

    model = cpu_model()
    versions = ", ".join(f"{p} {_version(p)}" for p in ("numpy", "numba", "pymatgen-core",
                                                          "vesin", "matscipy"))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores (load average {load}); "
            f"Python {platform.python_version()}; "
            f"fastgap._core {_core.__version__} ({_core.build_info}); {versions}")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def has_numba_backend() -> bool:
    try:
        from fastgap import neighbors
    except ImportError:
        return False
    return "numba" in getattr(neighbors, "BACKENDS", ())


Row = tuple[str, int, int, float, float]


def measure(batch: Batch, peers: Batch, repeats: int) -> list[Row]:
    """Rows (method, structures, atoms, median wall seconds, median CPU seconds)."""

    all_threads = os.cpu_count() or 1
    cases: list[tuple[str, Batch, Callable[[], object], int]] = [
        ("fastgap C++, 1 thread", batch, lambda: fastgap_cpp(batch, 1), repeats),
        ("fastgap neighbor_lists_batch (C++, 1 thread)", batch, lambda: fastgap_api(batch),
         repeats),
        (f"fastgap C++, 1 thread, streamed in chunks of {CHUNK}", batch,
         lambda: fastgap_cpp_chunked(batch, 1), repeats),
        (f"fastgap C++, {all_threads} threads", batch, lambda: fastgap_cpp(batch, 0), repeats),
        (f"fastgap C++, {all_threads} threads, streamed in chunks of {CHUNK}", batch,
         lambda: fastgap_cpp_chunked(batch, 0), repeats),
        ("fastgap C++, 1 thread (peer subset)", peers, lambda: fastgap_cpp(peers, 1), repeats),
    ]
    if has_numba_backend():
        cases.append(("fastgap Numba, 1 thread", batch, lambda: fastgap_numba(batch), repeats))
    peer_repeats = max(1, min(repeats, 3))
    cases += [
        ("pymatgen get_neighbor_list", peers, lambda: run_pymatgen(peers), peer_repeats),
        ("vesin (1 thread)", peers, lambda: run_vesin(peers), peer_repeats),
        ("matscipy neighbour_list", peers, lambda: run_matscipy(peers), peer_repeats),
    ]
    rows = []
    for name, data, fn, reps in cases:
        wall, cpu = median_seconds(fn, reps)
        rows.append((name, len(data.lattices), data.n_atoms, wall, cpu))
        print(f"{name:46s} {len(data.lattices):6d} {data.n_atoms:7d} {wall:8.4f} s wall "
              f"{data.n_atoms / wall:11,.0f} atoms/s, {cpu:8.4f} s CPU "
              f"{data.n_atoms / cpu:11,.0f} atoms/s", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    base = next(r for r in rows if r[0] == "fastgap C++, 1 thread (peer subset)")
    base_rate = base[2] / base[4]
    lines = [("| method | structures | atoms | median wall s | atoms/s wall | median CPU s | "
              "atoms/s CPU | CPU rate vs C++ 1 thread |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s, a, wall, cpu in rows:
        lines.append(f"| {name} | {s} | {a} | {wall:.4f} | {a / wall:,.0f} | {cpu:.4f} | "
                     f"{a / cpu:,.0f} | {(a / cpu) / base_rate:.3g}x |")
    return "\n".join(lines)


def scaling_table(rows: list[tuple[int, float, float]]) -> str:
    lines = ["| atoms in the cell | median wall s | median CPU s | atoms/s CPU |",
             "|---:|---:|---:|---:|"]
    for a, wall, cpu in rows:
        lines.append(f"| {a} | {wall:.4f} | {cpu:.4f} | {a / cpu:,.0f} |")
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace (or append) the neighbour-list section of RESULTS.md, leaving others intact."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if end < 0 else old[end:])
    RESULTS.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--limit", type=int, default=None, help="structures to load")
    parser.add_argument("--peer-limit", type=int, default=2000, help="structures for peers")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-results", action="store_true",
                        help=f"write the table to {SECTION!r} of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    batch = load(args.path, args.limit)
    peers = batch.head(min(args.peer_limit, len(batch.lattices)))
    sizes = np.diff(batch.atom_ptr)
    print(f"{len(batch.lattices)} structures, {batch.n_atoms} atoms "
          f"(median {np.median(sizes):.0f}, max {sizes.max()} atoms per structure)")
    machine = machine_line()
    print(machine)
    rows = measure(batch, peers, args.repeats)
    large = scaling(SCALING_SIZES, args.repeats)
    agreement = check_against_pymatgen(peers)
    print("agreement with pymatgen:", agreement)
    if args.write_results:
        command = "python benchmarks/bench_neighbors.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]))
        text = (f"{SECTION}\n\n"
                f"k = {K} nearest neighbours per atom, sorted and truncated, from NumPy arrays "
                f"of Materials Project structures ({args.path.name}: {len(batch.lattices)} "
                f"structures, {batch.n_atoms} atoms, median {np.median(sizes):.0f} and max "
                f"{sizes.max()} atoms per structure). Peers: all pairs within a cutoff grown "
                "by 1.3x until every atom's k-th tie group is inside it, then sorted per atom. "
                "Medians of repeats after one warm-up; wall time and process CPU time "
                "(all threads of the process) per method.\n\n"
                f"- command: `{command.strip()}`\n- machine: {machine}\n"
                f"- date: {datetime.date.today().isoformat()}\n"
                f"- agreement of fastgap (numbers, distances) with pymatgen on the peer "
                f"subset: {agreement}\n\n{table(rows)}\n\n"
                "Large cells (one distorted fcc Cu supercell each, C++ core, 1 thread): the "
                "cost per atom should stay flat as the cell grows.\n\n"
                f"{scaling_table(large)}\n")
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
