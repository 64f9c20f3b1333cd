"""Screening speed: where the time goes (one thread), then end to end with the options.

    python benchmarks/bench_predict.py --n 2000 --repeats 3 --workers 2

Inputs are the first ``--n`` CIFs of mp_gap36k (extracted to a temp dir) and a store
featurized from them. The model is ``--model`` (default: the bundled ensemble if present,
else 5 regressors + 1 classifier of the bundled architecture with random weights: speed
does not depend on the weight values).

Part 1, stages (in this process, 1 torch thread, medians of ``--repeats``): parse +
featurize, dataset build, collate, and one forward pass of each member kind, per structure;
the previous engine (`fastgap.model.predict_dataset` once per member, every member
averaged over the axis-swap orders) next to `fastgap.inference.predict_members`.

Part 2, end to end (`predict_to_file`, CSV out, including worker start-up): every case runs
in its own subprocess (so peak RSS is per case); the cases are interleaved round-robin,
``--repeats`` rounds after one warm-up round, and the median is reported. Peer in the same
run: the previous worker start (``spawn``). Peer for context (not measured here): CGCNN's
predict script, about 30 structures/s from CIF files on this machine (published number).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CIFS = "/work/shared/data/mp_gap36k/cifs.tar.gz"
# name -> PredictConfig fields; "default" is what `fastgap predict` does without flags
CASES: dict[str, dict] = {
    "default (fork, fp32, TTA)": {},
    "spawn workers (previous start)": {"start_method": "spawn"},
    "--no-tta": {"tta": False},
    "--precision bf16": {"precision": "bf16"},
    "--precision int8": {"precision": "int8"},
    "--members 1": {"members": 1},
    "--members 1 --precision bf16 --no-tta": {"members": 1, "precision": "bf16",
                                              "tta": False},
    "--members 1 --precision int8 --no-tta": {"members": 1, "precision": "int8",
                                              "tta": False},
    # `fastgap predict --fast`: the bundled one-network model (runs when it is installed) at
    # each precision; --fast itself picks bf16 on CPUs with native bfloat16, else int8
    "--model fast --no-tta (fp32)": {"model": "fast", "tta": False},
    "--model fast --no-tta --precision bf16": {"model": "fast", "precision": "bf16",
                                               "tta": False},
    "--model fast --no-tta --precision int8": {"model": "fast", "precision": "int8",
                                               "tta": False},
}


def extract_cifs(n: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(CIFS, "r|gz") as tar:
        for i, member in enumerate(m for m in tar if m.isfile()):
            if i >= n:
                break
            (out / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return out


def random_ensemble(out: Path, n_gap: int = 5) -> Path:
    """A bundle of the bundled architecture with random weights (seeded)."""
    import torch

    from fastgap.bundle_card import pack_bundle
    from fastgap.checkpoint import save_model
    from fastgap.model import FastGapModel, ModelConfig

    gap = ModelConfig(embed_dim=64, atom_hidden=96, struct_hidden=96, distance_encoding="rbf",
                      rbf_bins=24, pooling="attention", head_sizes=(128, 64))
    paths = []
    for i, target in enumerate(["band_gap_eV"] * n_gap + ["is_metal"]):
        torch.manual_seed(i)
        model = FastGapModel(ModelConfig() if target == "is_metal" else gap)
        model.target_is_class.fill_(target == "is_metal")
        paths.append(save_model(model, out / f"m{i}.safetensors", targets=[target],
                                featurizer={"k": 19}, train_config={"max_z": 85}))
    return pack_bundle(out / "bundle", paths[:n_gap], paths[n_gap:], {"name": "random weights"})


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stages(cifs: Path, spec: str, repeats: int) -> list[tuple[str, float]]:
    """(stage, microseconds per structure) in this process with one torch thread."""
    import numpy as np
    import torch

    from fastgap.data import BucketBatchSampler, StructureDataset, make_loader
    from fastgap.ensemble import load_bundle
    from fastgap.features import FeaturizerConfig
    from fastgap.featurize import process_chunk
    from fastgap.inference import predict_members
    from fastgap.model import predict_dataset
    from fastgap.readers import iter_raw

    torch.set_num_threads(1)
    bundle = load_bundle(spec)
    items = list(iter_raw(cifs))
    feat = FeaturizerConfig(k=bundle.k, num_threads=1)
    batch = process_chunk(items, None, feat, frozenset(), frozenset()).batch
    zmax = np.maximum.reduceat(batch.numbers.astype(np.int64), batch.atom_ptr[:-1])
    batch = batch.select(np.flatnonzero(zmax <= 85))
    n = batch.n_structures
    ds = StructureDataset(batch)
    idx = np.arange(n)
    gap, cls = bundle.band_gap[0].model, bundle.metal[0].model
    models = [m.model for m in bundle.members]

    def loader(tta: bool) -> list:
        return list(make_loader(ds, BucketBatchSampler(ds, idx, 256, shuffle=False, tta=tta)))

    def forward(model, batches, bf16=False):
        def run() -> None:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                for b in batches:
                    model(b)
        return run

    from fastgap.inference import quantized

    tta, ident = loader(True), loader(False)
    cases = [
        ("parse + featurize (CIF text -> features)",
         lambda: process_chunk(items, None, feat, frozenset(), frozenset())),
        ("dataset build (orders, shared rows)", lambda: StructureDataset(batch)),
        ("collate, every order", lambda: loader(True)),
        ("collate, identity order", lambda: loader(False)),
        ("forward: one regressor, fp32", forward(gap, ident)),
        ("forward: one regressor, bf16", forward(gap, ident, True)),
        ("forward: one regressor, int8", forward(quantized(gap), ident)),
        ("forward: classifier, every order (TTA)", forward(cls, tta)),
        ("forward: classifier, identity order", forward(cls, ident)),
        ("forward: classifier, bf16, identity order", forward(cls, ident, True)),
        ("previous engine: every member, own collate, TTA for all",
         lambda: [predict_dataset(m, ds, idx, tta=True) for m in models]),
        ("predict_members: every member, one collate (default)",
         lambda: predict_members(models, ds, tta=True)),
        ("predict_members: every member, bf16",
         lambda: predict_members(models, ds, precision="bf16")),
        ("predict_members: every member, int8",
         lambda: predict_members(models, ds, precision="int8")),
    ]
    return [(name, 1e6 * _median_time(fn, repeats) / n) for name, fn in cases]


def one_case(args: argparse.Namespace) -> int:
    """Subprocess body: one timed `predict_to_file`; prints JSON (seconds, n, peak RSS).

    The interpreter start, ``import torch`` and the bundle load happen once per
    ``fastgap predict`` call; they are timed separately (``start_s``).
    """
    start = time.perf_counter()
    import torch  # noqa: F401

    from fastgap.ensemble import load_bundle
    from fastgap.screening import PredictConfig, predict_to_file

    fields = json.loads(args.case)
    bundle = load_bundle(fields.pop("model", args.model))
    loaded = time.perf_counter()
    config = PredictConfig(model=bundle, workers=args.workers, progress=False, **fields)
    summary = predict_to_file([args.input], Path(args.tmp) / "p.csv", config)
    seconds = time.perf_counter() - loaded
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    print(json.dumps({"seconds": seconds, "n": summary.predicted, "rss_mb": rss,
                      "start_s": loaded - start}))
    return 0


def end_to_end(inputs: dict[str, Path], spec: str, args: argparse.Namespace,
               tmp: Path) -> list[tuple]:
    """Rows (input, case, n, median s, structures/s, peak RSS MB, start s), interleaved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from fastgap.ensemble import CARD_NAME, default_bundle_dir

    fast = (default_bundle_dir("fast") / CARD_NAME).is_file()
    plan = [(src, name) for src in inputs for name in CASES
            if not (src == "CIF files" and name == "--no-tta")
            and (fast or "model" not in CASES[name])]
    runs: dict[tuple[str, str], list[dict]] = {key: [] for key in plan}
    for round_ in range(args.repeats + 1):  # round 0 warms caches up and is not counted
        for src, name in plan:
            cmd = [sys.executable, __file__, "--one-case", json.dumps(CASES[name]),
                   "--input", str(inputs[src]), "--model", spec, "--workers",
                   str(args.workers), "--tmp", str(tmp)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if round_:
                runs[(src, name)].append(result)
            print(f"round {round_} {src:13} {name:45} {result['seconds']:6.2f} s", flush=True)
    rows = []
    for (src, name), results in runs.items():
        sec = statistics.median(r["seconds"] for r in results)
        n = results[0]["n"]
        start = statistics.median(r["start_s"] for r in results)
        rows.append((src, name, n, sec, n / sec, max(r["rss_mb"] for r in results), start))
    return rows


def report(stage_rows: list, rows: list, args: argparse.Namespace, label: str) -> str:
    from fastgap import __version__
    from fastgap.benchmarks_suite.report import cpu_model

    load = os.getloadavg()
    return "\n".join([
        (f"Machine: {cpu_model()}, 2 cores; load average {load[0]:.1f} at the end of the run "
        f"({'busy: other jobs shared the cores' if load[0] > 1.5 else 'idle'}); Python "
        f"{platform.python_version()}, fastgap {__version__}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC."),
        f"Model: {label}. Inputs: the first {args.n} mp_gap36k CIFs and a store of them.", "",
        (f"Command: `python benchmarks/bench_predict.py --n {args.n} --repeats {args.repeats} "
        f"--workers {args.workers}`"), "",
        "Stages, one process, 1 torch thread, median of repeats:", "",
        "| stage | µs / structure |", "|---|---|",
        *[f"| {name} | {us:.0f} |" for name, us in stage_rows], "",
        (f"End to end (`predict_to_file`: reading, featurizing, {args.workers} workers "
        "started and stopped, every member, CSV), each case in its own process, interleaved "
        "rounds, medians. Not in `median s`: the once-per-call `import torch` + bundle load "
        "(`start s`)."), "",
        "| input | case | structures | median s | structures/s | peak RSS MB | start s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {s} | {c} | {n} | {sec:.2f} | {rate:.0f} | {rss:.0f} | {st:.1f} |"
          for s, c, n, sec, rate, rss, st in rows],
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--one-case", dest="case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case is not None:
        return one_case(args)
    from fastgap.ensemble import default_bundle_dir, load_bundle
    from fastgap.featurize import FeaturizeConfig, featurize

    tmp = Path(tempfile.mkdtemp(prefix="fastgap-bench-"))
    cifs = extract_cifs(args.n, tmp / "cifs")
    featurize([cifs], tmp / "store", FeaturizeConfig(workers=args.workers, progress=False))
    spec = args.model or ("default" if (default_bundle_dir() / "card.json").is_file()
                          else str(random_ensemble(tmp)))
    bundle = load_bundle(spec)
    label = (f"{bundle.card.get('name', spec)} ({len(bundle.band_gap)} regressors + "
             f"{len(bundle.metal)} classifier(s))")
    stage_rows = stages(cifs, spec, args.repeats)
    for name, us in stage_rows:
        print(f"{name:60} {us:8.0f} us/structure", flush=True)
    rows = end_to_end({"CIF files": cifs, "feature store": tmp / "store"}, spec, args, tmp)
    print(report(stage_rows, rows, args, label))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
