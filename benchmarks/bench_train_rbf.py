"""Training step time of the gap_phys architecture (Gaussian distances) with and without the
denormals the encoding used to write (interleaved, same batches, one thread).

    python benchmarks/bench_train_rbf.py STORE      # STORE: a featurized mp_gap36k store
"""

import sys
import time

import numpy as np
import tomllib
import torch

from fastgap.data import BucketBatchSampler, StructureDataset, make_loader
from fastgap.model import FastGapModel, ModelConfig
from fastgap.store import Store
from fastgap.training.targets import masked_loss

torch.set_num_threads(1)
with open(__file__.replace("bench_train_rbf.py", "configs/gap_phys.toml"), "rb") as fh:
    cfg = tomllib.load(fh)["model"]
b = Store.open(sys.argv[1]).load(np.arange(6000))
ds = StructureDataset(b, ["band_gap_eV"], neighbour_rows=False)
sampler = BucketBatchSampler(ds, np.arange(len(ds)), 64, shuffle=False, tta=False)
batches = list(make_loader(ds, sampler))[:40]
torch.manual_seed(0)
model = FastGapModel(ModelConfig(**cfg))
opt = torch.optim.AdamW(model.parameters(), 1e-3)
new = FastGapModel.distance_encoding


def old(self, distances, valid):  # the encoding before: exp of every Gaussian
    distances = torch.where(valid, distances, torch.ones_like(distances))
    width = self.config.rbf_cutoff / self.config.rbf_bins
    return torch.exp(-(((distances.unsqueeze(-1) - self.rbf_centres) / width) ** 2))


def run():
    t = time.perf_counter()
    for bt in batches:
        loss = masked_loss(model(bt), bt.targets, model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / len(batches) / 64 * 1e3


for r in range(2):
    FastGapModel.distance_encoding = old
    a = run()
    FastGapModel.distance_encoding = new
    c = run()
    print(f"round {r}: ms per structure, train step: with denormals {a:.2f}, without {c:.2f}")
