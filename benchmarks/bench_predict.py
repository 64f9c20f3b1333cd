"""End-to-end screening speed: CIF files -> predictions, and feature store -> predictions.

    python benchmarks/bench_predict.py --n 1000 --repeats 3 --results benchmarks/RESULTS.md

Inputs are the first ``--n`` CIFs of mp_gap36k (extracted to a temp dir) and a store
featurized from them. The model is ``--model`` (default: the bundled ensemble if present,
else 5 regressors + 1 classifier of the default architecture with random weights: speed
does not depend on the weight values). Each case is run once to warm up, then ``--repeats``
times; medians are reported with peak RSS. Peer for context (not measured here): CGCNN's
predict script, about 30 structures/s from CIF files on this machine (published number).
"""

from __future__ import annotations

import argparse
import datetime
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


def extract_cifs(n: int, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(CIFS, "r|gz") as tar:
        for i, member in enumerate(m for m in tar if m.isfile()):
            if i >= n:
                break
            (out / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return out


def random_ensemble(out: Path, n_gap: int = 5) -> Path:
    """A bundle of the default architecture with random weights (seeded)."""
    import torch

    from fastgap.checkpoint import save_model
    from fastgap.ensemble import pack_bundle
    from fastgap.model import FastGapModel, ModelConfig

    paths = []
    for i, target in enumerate(["band_gap_eV"] * n_gap + ["is_metal"]):
        torch.manual_seed(i)
        model = FastGapModel(ModelConfig())
        model.target_is_class.fill_(target == "is_metal")
        paths.append(save_model(model, out / f"m{i}.safetensors", targets=[target],
                                featurizer={"k": 19}, train_config={"max_z": 85}))
    return pack_bundle(out / "bundle", paths[:n_gap], paths[n_gap:], {"name": "random weights"})


def time_case(inputs: list[Path], model: object, tta: bool, out: Path, repeats: int,
              workers: int) -> tuple[float, int]:
    from fastgap.screening import PredictConfig, predict_to_file

    config = PredictConfig(model=model, workers=workers, tta=tta, progress=False)
    times, n = [], 0
    for r in range(repeats + 1):  # the first run warms up (worker spawn, numba, caches)
        start = time.perf_counter()
        summary = predict_to_file(inputs, out, config)
        if r:
            times.append(time.perf_counter() - start)
        n = summary.predicted
    return statistics.median(times), n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--results", default=None)
    args = p.parse_args()
    from fastgap import __version__
    from fastgap.ensemble import default_bundle_dir, load_bundle
    from fastgap.featurize import FeaturizeConfig, featurize

    tmp = Path(tempfile.mkdtemp(prefix="fastgap-bench-"))
    cifs = extract_cifs(args.n, tmp / "cifs")
    featurize([cifs], tmp / "store", FeaturizeConfig(workers=args.workers, progress=False))
    spec = args.model or ("default" if (default_bundle_dir() / "card.json").is_file()
                          else str(random_ensemble(tmp)))
    bundle = load_bundle(spec)
    label = bundle.card.get("name", spec)
    rows = []
    for source, inputs in (("CIF files", [cifs]), ("feature store", [tmp / "store"])):
        for tta in (True, False):
            sec, n = time_case(inputs, bundle, tta, tmp / "p.csv", args.repeats, args.workers)
            rows.append((source, tta, n, sec, n / sec))
            print(f"{source:14} tta={tta!s:5} {n} structures {sec:7.2f} s {n / sec:8.0f} /s",
                  flush=True)
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    lines = [
        f"Machine: {cpu}, 2 cores (shared, busy); Python {platform.python_version()}, "
        f"fastgap {__version__}; {datetime.date.today().isoformat()}.",
        f"Model: {label} ({len(bundle.band_gap)} regressors + {len(bundle.metal)} "
        f"classifier(s)); {args.workers} featurize workers; medians of {args.repeats} runs "
        "after one warm-up; end to end including reading, featurizing and writing CSV.", "",
        f"Command: `python benchmarks/bench_predict.py --n {args.n} --repeats {args.repeats}"
        f" --workers {args.workers}`", "",
        "| input | TTA | structures | median s | structures/s |", "|---|---|---|---|---|",
        *[f"| {s} | {'on' if t else 'off'} | {n} | {sec:.2f} | {rate:.0f} |"
          for s, t, n, sec, rate in rows], "",
        f"Peak RSS: {rss:.0f} MB (largest of the main process and any worker).", "",
        "Peer for context: CGCNN's predict script runs at about 30 structures/s from CIF files "
        "on this machine (published number, not measured here).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.results:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
        from evaluate_screening import update_block

        update_block(Path(args.results), "screening-speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
