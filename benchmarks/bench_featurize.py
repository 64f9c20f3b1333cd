"""End-to-end featurization throughput and peak memory (the whole process tree).

Usage:
    python benchmarks/bench_featurize.py [--repeats 3] [--backend auto] [--cases jsonl,cif]
    python benchmarks/bench_featurize.py --scale /path/to/syn1m.jsonl.gz --repeats 1

Each case runs ``fastgap featurize`` in a fresh subprocess (so worker start-up and JIT
warm-up are included, as a user sees them) into a new store, sampling the RSS summed over
the process and its workers every 0.1 s, and the CPU time (user + system) of the whole
process tree. Reports the median over repeats; the 1- and
2-worker runs are measured in the same invocation so their ratio holds on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MP = Path("/work/shared/data/mp_gap36k")
CASES = {
    "jsonl": MP / "structures.jsonl.gz",
    "cif": MP / "cifs.tar.gz",
}


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_once(src: Path, workers: int, backend: str, chunk: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="fastgap-bench-")) / "store.zarr"
    cmd = [sys.executable, "-m", "fastgap", "featurize", str(src), "--out", str(out),
           "--workers", str(workers), "--backend", backend, "--chunk-size", str(chunk),
           "--no-progress"]
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run and its joined workers
    cpu = sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))
    text = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"featurize failed ({proc.returncode}): {text}")
    written = int(text.split("written ")[1].split(",")[0])
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    from fastgap.store import Store

    n_atoms = Store.open(out).n_atoms
    shutil.rmtree(out.parent)
    return {"wall_s": wall, "cpu_s": cpu, "written": written, "per_s": written / wall,
            "peak_rss_mib": peak / 2**20, "bytes_per_atom": disk / max(n_atoms, 1)}


def machine_line() -> str:
    import fastgap
    from fastgap.benchmarks_suite.report import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"fastgap {fastgap.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--cases", default="jsonl,cif")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--scale", type=Path, default=None, help="one large input instead")
    args = parser.parse_args()
    cases = {"scale": args.scale} if args.scale else {c: CASES[c] for c in args.cases.split(",")}
    print(machine_line(), time.strftime("%Y-%m-%d"))
    print("| input | workers | structures | wall s | structures/s | CPU s (all processes) | "
          "peak RSS MiB | bytes/atom |")
    print("|---|---|---|---|---|---|---|---|")
    for name, src in cases.items():
        for workers in map(int, args.workers.split(",")):
            runs = [run_once(src, workers, args.backend, args.chunk_size)
                    for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {name} | {workers} | {med['written']:.0f} | {med['wall_s']:.1f} | "
                  f"{med['per_s']:.0f} | {med['cpu_s']:.1f} | {med['peak_rss_mib']:.0f} | "
                  f"{med['bytes_per_atom']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
