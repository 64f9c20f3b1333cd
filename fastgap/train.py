"""Fit a ``FastGapModel`` on a feature store: ``train(TrainConfig) -> run directory``.

Run directory: ``config.json`` (resolved config), ``split.json`` (ids), ``best.safetensors``
(best validation loss), ``last.safetensors`` + ``last_state.pt`` (resume), ``history.json``,
``init.json`` (with ``init_from``: the source checkpoint and which output rows it gave),
With ``ema_decay > 0`` the checkpoint kept as best (and evaluated) holds the exponential
moving average of the weights; ``last.safetensors`` the raw weights training resumes from.
With ``distance_noise > 0`` training batches see jittered neighbour distances (validation
and evaluation never do).
``metrics.json`` (per split, with and without test-time averaging over axis swaps),
``curves.png``, ``parity_<target>.png``. Under ``torchrun`` every rank trains on its shard
of the batches and only rank 0 writes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomllib

from fastgap.model import ModelConfig

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults run (given ``store`` and ``out``)."""

    store: str = ""
    labels: str = ""  # CSV of properties joined to the store by id (`fastgap.labels`)
    out: str = "run"
    targets: list[str] = field(default_factory=lambda: ["band_gap_eV"])
    classification: list[str] = field(default_factory=list)  # 0/1 properties; is_metal implied
    where: str = ""
    # per-target filters: target -> condition (``where`` syntax); a structure failing a
    # target's condition has no value for that target (masked in the loss and the metrics)
    # but still trains the other targets, e.g. {"band_gap_eV": "band_gap_eV > 0"} beside
    # is_metal: one network, regression on non-zero gaps, classification on every structure
    target_where: dict[str, str] = field(default_factory=dict)
    max_z: int | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    split_file: str = ""
    seed: int = 0
    epochs: int = 30
    stop_after_epochs: int = 0  # end this run early (schedule still spans `epochs`); 0 = off
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    grad_clip: float = 5.0
    # exponential moving average of the weights (0 = off): validation, early stopping and
    # best.safetensors use the averaged weights; decay per optimizer step, e.g. 0.999
    ema_decay: float = 0.0
    # augmentation: Gaussian noise (standard deviation, Å) added to every neighbour distance
    # of every training batch, drawn anew each time (`fastgap.training.loop.jitter_distances`)
    distance_noise: float = 0.0
    patience: int = 10
    augment: bool = True
    tta: bool = True
    compile: str = "auto"
    amp: str = "auto"
    device: str = "auto"
    num_workers: int = 0
    threads: int = 0
    resume: bool = False
    init_from: str = ""  # checkpoint or run dir to start from (`fastgap.training.finetune`)
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        self.split = tuple(float(f) for f in self.split)
        if not self.targets:
            raise ValueError("targets: expected at least one target name, got none")
        if not isinstance(self.target_where, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.target_where.items()
        ):
            raise TypeError(f"target_where: expected a table of target = \"condition\", got "
                            f"{self.target_where!r}")
        stray = sorted(set(self.target_where) - set(self.targets))
        if stray:
            raise ValueError(f"target_where: {stray} are not among the targets {self.targets}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a number in [0, 1), got {self.ema_decay!r}")
        if not (math.isfinite(self.distance_noise) and self.distance_noise >= 0.0):
            raise ValueError(
                f"distance_noise: expected a finite number >= 0 (Å), got {self.distance_noise!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        out["split"] = list(self.split)
        return out

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a TOML file (top-level keys = fields, ``[model]`` table) then apply overrides."""
        data = tomllib.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)} in {str(path)!r}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def train(config: TrainConfig, featurized: FeaturizedBatch | None = None) -> Path:
    """Train, keep the best checkpoint, evaluate; returns the run directory.

    ``featurized`` replaces reading ``config.store`` (in-memory data, tests).
    """
    from fastgap.training.run import run_training

    return run_training(config, featurized)
