"""Training and inference throughput of the default model (synthetic data, CPU).

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --structures 15000 --batches 40

Synthetic structures with 1..40 atoms (median about 20) and k = 19. Each mode trains
``--batches`` batches after 3 warm-up batches, ``--repeats`` times; the median time per
batch is extrapolated to one epoch over ``--structures`` structures.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from fastgap.data import BucketBatchSampler, StructureDataset, make_loader
from fastgap.model import FastGapModel, ModelConfig, predict_dataset
from fastgap.synthetic import synthetic_featurized
from fastgap.training.targets import masked_loss


def time_training(model, loader_batches, n: int, compiled: bool) -> float:
    net = torch.compile(model, dynamic=True) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def step(b):
        loss = masked_loss(net(b), b.targets, model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for b in loader_batches[:3]:
        step(b)
    t0 = time.perf_counter()
    for b in loader_batches[3 : 3 + n]:
        step(b)
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--structures", type=int, default=15000)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--store", default="", help="a feature store (real structures) instead "
                   "of synthetic ones; its structures with band_gap_eV > 0 are used")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.store:
        from fastgap.store import Store

        data = Store.open(args.store).load()
        pool = np.flatnonzero(data.properties["band_gap_eV"] > 0)
    else:
        data = synthetic_featurized(args.structures, np.random.default_rng(0), max_atoms=40)
        pool = np.arange(data.n_structures)
    ds = StructureDataset(data, ["band_gap_eV"])
    pool = pool[: args.structures]
    sampler = BucketBatchSampler(ds, pool, args.batch_size, shuffle=True, augment=True)
    batches = list(make_loader(ds, sampler))
    n_batches = len(batches)
    n = min(args.batches, n_batches - 3)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, median atoms "
          f"{int(np.median(ds.n_atoms))}, {n_batches} batches/epoch")
    model = FastGapModel(ModelConfig())
    modes = [("eager", False)] + ([("compiled", True)] if args.compile else [])
    print("| mode | s/batch | structures/s | s/epoch (15k) |\n|---|---|---|---|")
    for name, comp in modes:
        sec = statistics.median(time_training(model, batches, n, comp) for _ in range(args.repeats))
        print(f"| train {name} | {sec:.4f} | {args.batch_size / sec:.0f} | {sec * n_batches:.1f} |")
    idx = pool[:3000]
    for tta in (False, True):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict_dataset(model, ds, idx, tta=tta, batch_size=256)
            times.append(time.perf_counter() - t0)
        print(f"| predict tta={tta} | | {len(idx) / statistics.median(times):.0f} | |")


if __name__ == "__main__":
    main()
