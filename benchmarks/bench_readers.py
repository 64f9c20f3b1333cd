"""Reader throughput on one core: JSON-lines (mp_gap36k) and CIFs from the tar.gz (gemmi vs pymatgen).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_readers.py [--data /work/shared/data] \
        [--jsonl-records 33189] [--cif-members 2000] [--repeats 3]

Prints a markdown table (records/s, median over repeats after a warm-up) with a machine line.
Parsing is timed on pre-read `RawItem`s (what a worker process does); "bulk" rows use
`parse_batch` on chunks (what the featurize workers run); "stream" rows also include
decompression and archive walking (`iter_structures`).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from fastgap.readers import (
    RawItem,
    ReadPolicy,
    iter_raw,
    iter_raw_chunks,
    iter_structures,
    parse_batch,
    parse_raw,
)
from fastgap.structures import Reject


def machine_line() -> str:
    from fastgap.benchmarks_suite.report import cpu_model

    cpu = cpu_model()
    libs = ", ".join(f"{n} {version(n)}" for n in ("numpy", "orjson", "gemmi", "pymatgen"))
    return f"{cpu}; Python {platform.python_version()}; {libs}; {datetime.date.today()}"


def median_rate(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median records/s over ``repeats`` timed calls of ``run`` (which returns a count)."""
    rates, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates), count


def parse_all(items: list[RawItem], policy: ReadPolicy) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for item in items:
            for record in parse_raw(item, policy):
                if isinstance(record, Reject):
                    raise RuntimeError(f"{record.source}: {record.reason}")
                n += 1
        return n

    return run


def parse_bulk(chunks: list[list[RawItem]], policy: ReadPolicy) -> Callable[[], int]:
    def run() -> int:
        n = 0
        for chunk in chunks:
            parsed = parse_batch(chunk, policy)
            bad = [r for r in parsed.records if r[0] != "ok"]
            if bad:
                raise RuntimeError(f"{bad[0][2]}: {bad[0][3]}")
            n += parsed.batch.n_structures
        return n

    return run


def stream_all(inputs: list[Path], limit: int, policy: ReadPolicy) -> Callable[[], int]:
    def run() -> int:
        return sum(1 for _ in itertools.islice(iter_structures(inputs, policy), limit))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--jsonl-records", type=int, default=33189)
    parser.add_argument("--cif-members", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    jsonl = args.data / "mp_gap36k" / "structures.jsonl.gz"
    tar = args.data / "mp_gap36k" / "cifs.tar.gz"
    lines = list(itertools.islice(iter_raw([jsonl]), args.jsonl_records))
    members = list(itertools.islice(iter_raw([tar]), args.cif_members))
    blocks = list(itertools.islice(iter_raw_chunks([jsonl], 1000), -(-args.jsonl_records // 1000)))
    member_chunks = [members[i : i + 1000] for i in range(0, len(members), 1000)]
    default = ReadPolicy()
    gemmi, pmg = ReadPolicy(cif_engine="gemmi"), ReadPolicy(cif_engine="pymatgen")
    cases = [
        ("JSON-lines parse (mp_gap36k)", parse_all(lines, default)),
        ("JSON-lines bulk parse_batch (1000-line blocks)", parse_bulk(blocks, default)),
        ("JSON-lines stream .jsonl.gz", stream_all([jsonl], args.jsonl_records, default)),
        ("CIF parse, gemmi path", parse_all(members, gemmi)),
        ("CIF bulk parse_batch, gemmi path", parse_bulk(member_chunks, gemmi)),
        ("CIF parse, pymatgen path", parse_all(members, pmg)),
        ("CIF stream .tar.gz, auto", stream_all([tar], args.cif_members, default)),
    ]
    # warm-up: imports and first-call costs stay out of the timings
    parse_all(lines[:50], default)()
    parse_all(members[:20], gemmi)()
    parse_all(members[:20], pmg)()
    print(f"machine: {machine_line()}; 1 process")
    print(f"\n| case | records | records/s (median of {args.repeats}) |")
    print("|---|---|---|")
    for name, run in cases:
        rate, count = median_rate(run, args.repeats)
        print(f"| {name} | {count} | {rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
