"""Devices, distributed setup, the LR schedule and one training epoch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastgap.training.targets import masked_loss

if TYPE_CHECKING:
    from fastgap.data import Batch

MIN_JITTER_FRACTION = 0.5  # a jittered distance never falls below half the true one


@dataclass
class Runtime:
    """Where and how the run executes (resolved from the config and the environment)."""

    device: torch.device
    amp: bool
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_runtime(device: str, amp: str) -> Runtime:
    """Pick the device, AMP and (under ``torchrun``) the process group."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    if amp not in ("auto", "on", "off"):
        raise ValueError(f"amp: expected 'auto', 'on' or 'off', got {amp!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was requested but torch sees no CUDA device")
    name = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if name == "cuda" else "gloo")
        if name == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            name = f"cuda:{local}"
    dev = torch.device(name)
    use_amp = dev.type == "cuda" and amp != "off"
    if amp == "on" and dev.type != "cuda":
        raise ValueError("amp: 'on' needs a CUDA device; use 'auto' or 'off' on CPU")
    return Runtime(device=dev, amp=use_amp, rank=rank, world=world)


def use_compile(setting: str, device: torch.device) -> bool:
    """``auto`` compiles on CUDA only: on CPU compiling the LSTMs did not pay off (bench)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"compile: expected 'auto', 'on' or 'off', got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """Exponential moving average of ``model``'s parameters (None when ``decay`` is 0).

    Buffers (the normaliser) are copied once, not averaged: they do not change in training.
    """
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Multiplier of the base LR at each step: linear warm-up, then cosine to 0 or constant."""
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule: expected 'cosine' or 'constant', got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_epoch(
    model: nn.Module,
    loss_model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    *,
    grad_clip: float,
    progress: bool,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    distance_noise: float = 0.0,
) -> float:
    """One pass over ``loader``; returns the mean batch loss (normalised units).

    ``ema`` (an ``AveragedModel`` of ``loss_model``) is updated after every optimizer step.
    ``distance_noise`` (Å) jitters every batch's neighbour distances (``jitter_distances``)
    with torch's global generator, so a seeded epoch draws the same noise again.
    """
    from tqdm import tqdm

    model.train()
    total, n = 0.0, 0
    for batch in tqdm(loader, disable=not progress, leave=False, desc="train"):
        batch = batch.to(runtime.device, non_blocking=True)
        if distance_noise > 0:
            batch = jitter_distances(batch, distance_noise)
        with torch.autocast(runtime.device.type, enabled=runtime.amp):
            out = model(batch)
        loss = masked_loss(out.float(), batch.targets, loss_model)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(loss_model)
        total += float(loss.detach())
        n += 1
    return total / max(n, 1)


def jitter_distances(batch: Batch, sigma: float, generator: torch.Generator | None = None) -> Batch:
    """A copy of ``batch`` whose neighbour distances carry Gaussian noise of ``sigma`` Å.

    Only real neighbour entries move (columns 1..length-1 of ``atom_distances``, (N, L)
    float32 Å): the centre stays at 0 and padding is untouched. A noisy distance is kept at
    least ``MIN_JITTER_FRACTION`` of the true one, so it stays positive. Entries keep their
    order (a small jitter can leave a row slightly out of distance order: part of the
    augmentation). The noise is per entry, so the two directions of a pair move apart.
    """
    d = batch.atom_distances
    steps = torch.arange(d.shape[1], device=d.device)
    real = (steps > 0) & (steps < batch.atom_lengths[:, None])  # (N, L)
    noise = torch.randn(d.shape, generator=generator, device=d.device, dtype=d.dtype) * sigma
    noisy = torch.maximum(d + noise, d * MIN_JITTER_FRACTION)
    return replace(batch, atom_distances=torch.where(real, noisy, d))
