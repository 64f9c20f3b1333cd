"""Screening at scale: one `fastgap predict` run over a large input, memory and rate over time.

    python scripts/make_synthetic.py ../shared/data/mp_gap36k/structures.jsonl.gz syn.jsonl.gz --n 1000000
    python benchmarks/bench_predict_scale.py syn.jsonl.gz --out-dir scale_run -- --fast --workers 2

Everything after ``--`` is passed to ``fastgap predict``. The run is a subprocess; every
``--interval`` seconds this script samples the process tree (the parent and its forked
workers): the sum of RSS (counts pages shared between the forked workers once per process,
so it overstates) and the sum of PSS (shared pages split between the processes that map
them: the memory the job really holds), and the rows written so far (lines of the CSV).

Writes ``--out-dir``/``scale.json`` (wall time, structures/s overall and over the second
half, peak PSS / RSS, rows + rejects against the input count) and ``scale.png`` (rows
written and memory against time). Every input must end as a row or a reject: the script
exits non-zero if rows + rejects differ from the number of input records.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def count_records(path: Path) -> int:
    """Structures of a feature store, or non-empty lines of a JSON-lines(.gz) file."""
    if (path / "zarr.json").is_file():
        from fastgap.store import Store

        return Store.open(path).n_structures
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``proc`` and its descendants."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


class LineCounter:
    """Counts newlines of a growing file incrementally (bytes read once)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def update(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            self.offset += len(chunk)
            self.lines += chunk.count(b"\n")
        return self.lines


def run(input_path: Path, out_dir: Path, predict_args: list[str], interval: float) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    preds, rejects = out_dir / "preds.csv", out_dir / "preds.rejects.csv"
    for stale in (preds, rejects):
        stale.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "fastgap",
        "predict",
        str(input_path),
        "--out",
        str(preds),
        "--no-progress",
        *predict_args,
    ]
    counter = LineCounter(preds.with_name(preds.name + ".partial"))  # rows land here first
    samples: list[tuple[float, int, int, int]] = []  # (s, rows incl. header, rss, pss)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        rss, pss = tree_memory(ps)
        samples.append((time.perf_counter() - t0, counter.update(), rss, pss))
        time.sleep(interval)
    wall = time.perf_counter() - t0
    log = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"fastgap predict failed ({proc.returncode}):\n{log}")
    rows = LineCounter(preds).update() - 1  # the finished file, less its header
    n_rejects = max(LineCounter(rejects).update() - 1, 0)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    second_half = (
        (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])
        if len(half) > 1 and half[-1][0] > half[0][0]
        else float("nan")
    )
    return {
        "command": " ".join(
            [
                "fastgap",
                "predict",
                str(input_path),
                "--out",
                "preds.csv",
                "--no-progress",
                *predict_args,
            ]
        ),
        "wall_s": wall,
        "rows": rows,
        "rejects": n_rejects,
        "structures_per_s": rows / wall,
        "structures_per_s_second_half": second_half,
        "peak_pss_mib": max(s[3] for s in samples) / 2**20 if samples else float("nan"),
        "peak_rss_sum_mib": max(s[2] for s in samples) / 2**20 if samples else float("nan"),
        "log_tail": log.strip().splitlines()[-4:],
        "samples": samples,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in result["samples"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(t, [max(s[1] - 1, 0) for s in result["samples"]])
    a.set_xlabel("time (s)")
    a.set_ylabel("rows written")
    a.set_title(f"{result['structures_per_s']:,.0f} structures/s overall")
    b.plot(t, [s[3] / 2**20 for s in result["samples"]], label="PSS, process tree")
    b.plot(t, [s[2] / 2**20 for s in result["samples"]], label="RSS summed (overstates)", alpha=0.6)
    b.set_xlabel("time (s)")
    b.set_ylabel("MiB")
    b.legend()
    b.set_title(f"peak PSS {result['peak_pss_mib']:,.0f} MiB")
    fig.suptitle(result["command"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, predict_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", type=Path, help="JSON-lines(.gz) input or a feature store")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    args = p.parse_args(ours)
    from fastgap.benchmarks_suite.report import machine_line

    n_inputs = count_records(args.input)
    result = run(args.input, args.out_dir, predict_args, args.interval)
    result.update(
        inputs=n_inputs,
        machine=machine_line(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    plot(result, args.out_dir / "scale.png")
    summary = {k: v for k, v in result.items() if k != "samples"}
    (args.out_dir / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    if result["rows"] + result["rejects"] != n_inputs:
        print(
            f"LOST INPUTS: {n_inputs} inputs, {result['rows']} rows + {result['rejects']} rejects",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
