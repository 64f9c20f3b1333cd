"""The body of ``fastgap.train.train``: data, model, optimisation, checkpoints, evaluation."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastgap.checkpoint import load_state, save_model, save_state
from fastgap.data import BucketBatchSampler, StructureDataset, make_loader
from fastgap.digest import file_sha256
from fastgap.domain import ELEMENTS_KEY, PERIODICITY_KEY, element_set, periodicity_counts
from fastgap.metrics import target_metrics
from fastgap.model import FastGapModel, ModelConfig, predict_dataset
from fastgap.training import loop
from fastgap.training.targets import (
    DERIVED_CLASS_TARGETS,
    derived_targets,
    fit_normaliser,
    make_split,
    select_structures,
)

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch
    from fastgap.train import TrainConfig


def prepare_data(config: TrainConfig, featurized: FeaturizedBatch) -> tuple[StructureDataset, dict]:
    """Dataset with ``config``'s targets, and the train / val / test indices (int64 arrays)
    after its filters: what a run of ``config`` trains and evaluates on."""
    props = {k: np.asarray(v, dtype=np.float64) for k, v in featurized.properties.items()}
    derived = derived_targets(props)
    columns = {**props, **derived}
    ptr = np.asarray(featurized.atom_ptr, dtype=np.int64)
    zmax = np.zeros(len(ptr) - 1, dtype=np.int64)
    np.maximum.at(zmax, np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)), featurized.numbers)
    keep = select_structures(columns, config.where, zmax, config.max_z)
    # round-2 rows only for a model that reads them (the same numbers without, faster)
    dataset = StructureDataset(featurized, config.targets, derived,
                               neighbour_rows=config.model.rounds > 1,
                               angle_bins=config.model.angle_bins)
    for j, target in enumerate(config.targets):  # per-target filters: value -> missing
        if target in config.target_where:
            ok = select_structures(columns, config.target_where[target], zmax, None)
            dataset.targets[~torch.as_tensor(ok), j] = float("nan")
    has_target = ~torch.isnan(dataset.targets).all(dim=1).numpy()
    candidates = np.flatnonzero(keep & has_target)
    if int(zmax[candidates].max(initial=0)) > config.model.max_z:
        raise ValueError(
            f"max_z: the data holds element {int(zmax[candidates].max())}, the model embeds "
            f"up to {config.model.max_z}; set max_z or model.max_z"
        )
    split = make_split(
        featurized.ids, candidates, fractions=config.split, seed=config.split_seed,
        split_file=config.split_file or None,
    )
    if len(split["train"]) == 0 or len(split["val"]) == 0:
        raise ValueError(f"split: train and val must be non-empty, got {len(split['train'])} "
                         f"train and {len(split['val'])} val structures after filtering")
    return dataset, split


def _build_model(config: TrainConfig, dataset: StructureDataset, train_idx: np.ndarray):
    is_class = [t in DERIVED_CLASS_TARGETS or t in config.classification for t in config.targets]
    cfg = ModelConfig.from_dict({**config.model.to_dict(), "n_outputs": len(config.targets)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # weights depend on the seed only
        model = FastGapModel(cfg)
    mean, std = fit_normaliser(dataset.targets[train_idx].double().numpy(), is_class)
    model.target_mean.copy_(torch.as_tensor(mean))
    model.target_std.copy_(torch.as_tensor(std))
    model.target_is_class.copy_(torch.as_tensor(is_class))
    return model


def _val_loss(model, dataset, idx, config, runtime) -> float:
    """Validation loss (normalised units) through the shared prediction path, no TTA."""
    pred = predict_dataset(model, dataset, idx, tta=False, batch_size=config.eval_batch_size,
                           device=runtime.device, amp=runtime.amp)
    true = dataset.targets[idx].double().numpy()
    std, is_class = model.target_std.cpu().numpy(), model.target_is_class.cpu().numpy()
    p = np.clip(pred, 1e-7, 1 - 1e-7)
    with np.errstate(invalid="ignore", divide="ignore"):
        bce = -(true * np.log(p) + (1 - true) * np.log(1 - p))
    per = np.where(is_class, bce, np.abs(pred - true) / std)
    return float(np.nanmean(np.nanmean(np.where(np.isnan(true), np.nan, per), axis=0)))


def _load(config: TrainConfig, featurized: FeaturizedBatch | None) -> tuple[Any, dict]:
    """The data and its featurizer config (from the store attributes)."""
    if featurized is not None:
        return featurized, {"k": int(featurized.nbr_numbers.shape[1])}
    if not config.store:
        raise ValueError("store: expected the path of a feature store, got ''")
    from fastgap.store import Store

    store = Store.open(config.store)
    return store.load(), dict(store.attrs.get("featurizer", {}))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def _start(config: TrainConfig, out: Path, model: FastGapModel, opt, sched, scaler,
           ema) -> dict:
    """Fresh counters, or the saved ones (and optimizer and EMA state) when resuming."""
    state = {"epoch": 0, "best": float("inf"), "bad_epochs": 0, "history": []}
    if not config.resume:
        return state
    from safetensors.torch import load_file

    saved = load_state(out / "last_state.pt")
    if (ema is None) != ("ema" not in saved):
        raise ValueError(
            f"resume: the saved run was trained with{'out' if 'ema' not in saved else ''} "
            f"ema_decay, this config has ema_decay={config.ema_decay}; use the run's config"
        )
    model.load_state_dict(load_file(str(out / "last.safetensors")))
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    return {k: saved[k] for k in state}


def evaluate_models(models: list[FastGapModel], dataset: StructureDataset, split: dict,
                    config: TrainConfig, *, parts: tuple[str, ...] | None = None,
                    plot_dir: Path | None = None, device: Any = "cpu",
                    amp: bool = False) -> dict:
    """Metrics of the models' mean prediction per split part, with and without TTA.

    Args:
        models: one model (a run's evaluation) or several of one task (an ensemble:
            regression outputs averaged in target units, classifiers as probabilities).
        dataset, split: from `prepare_data` (split: part -> (n,) int64 dataset indices).
        config: the runs' config (targets, eval batch size).
        parts: split parts to score (None = every part of ``split``).
        plot_dir: where the test part's parity PNGs (TTA, regression targets) go.

    Returns:
        {part: {"tta" | "no_tta": {target: metrics}}}, as in a run's ``metrics.json``.
    """
    from fastgap.plots import plot_parity

    is_class = models[0].target_is_class.cpu().tolist()
    metrics: dict[str, Any] = {}
    for part in parts or tuple(split):
        idx = split[part]
        true = dataset.targets[idx].double().numpy()  # (n, T)
        metrics[part] = {}
        for mode, tta in (("tta", True), ("no_tta", False)):
            pred = np.mean([predict_dataset(m, dataset, idx, tta=tta,
                                            batch_size=config.eval_batch_size, device=device,
                                            amp=amp) for m in models], axis=0)  # (n, T)
            metrics[part][mode] = target_metrics(true, pred, config.targets, is_class)
            if plot_dir is not None and part == "test" and tta:
                Path(plot_dir).mkdir(parents=True, exist_ok=True)
                for j, name in enumerate(config.targets):
                    if not is_class[j]:
                        plot_parity(true[:, j], pred[:, j], name,
                                    Path(plot_dir) / f"parity_{name}.png")
    return metrics


def run_training(config: TrainConfig, featurized: FeaturizedBatch | None) -> Path:
    """See ``fastgap.train.train``."""
    runtime = loop.resolve_runtime(config.device, config.amp)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    data, featurizer = _load(config, featurized)
    labels = None
    if config.labels:
        from fastgap.labels import attach_labels

        data, labels = attach_labels(data, config.labels, config.targets)
        if labels.unmatched:
            warnings.warn(f"labels: {labels.unmatched} of {labels.rows} rows of "
                          f"{config.labels!r} name no structure of the data (first: "
                          f"{labels.first_unmatched})", UserWarning, stacklevel=2)
    source = None
    if config.init_from:
        from fastgap.training.finetune import load_init

        config, source_path, source, source_meta = load_init(config, featurizer)
    dataset, split = prepare_data(config, data)
    out = Path(config.out)
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", config.to_dict())
        if labels is not None:
            _write_json(out / "labels.json", labels.to_dict())
        _write_json(out / "split.json", {k: [str(data.ids[i]) for i in v] for k, v in split.items()})
    model = _build_model(config, dataset, split["train"])
    if source is not None:
        from fastgap.training.finetune import initialise

        init = initialise(model, source, source_meta["targets"], config.targets)
        if runtime.is_main:
            sha256 = file_sha256(source_path)
            _write_json(out / "init.json", {"checkpoint": str(source_path), "sha256": sha256,
                                            "source_targets": source_meta["targets"], **init})
    model = model.to(runtime.device)
    sampler = BucketBatchSampler(
        dataset, split["train"], config.batch_size, shuffle=True, seed=config.seed,
        augment=config.augment, shard=(runtime.rank, runtime.world),
    )
    loader = make_loader(dataset, sampler, num_workers=config.num_workers,
                         pin_memory=runtime.device.type == "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * len(sampler)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, loop.lr_lambda(steps, max(1, int(config.warmup_frac * steps)), config.schedule))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp)
    ema = loop.make_ema(model, config.ema_decay)
    state = _start(config, out, model, opt, sched, scaler, ema)
    # which kinds of structure (periodic, partial, molecule) and elements the model learns from
    trained_on = {PERIODICITY_KEY: periodicity_counts(np.asarray(data.pbc)[split["train"]]),
                  ELEMENTS_KEY: element_set(data.numbers, data.atom_ptr, split["train"])}
    _fit(config, runtime, model, dataset, split, loader, sampler, opt, sched, scaler, state,
         featurizer, ema, trained_on)
    if runtime.is_main:
        from fastgap.checkpoint import load_model
        from fastgap.plots import plot_curves

        best, _ = load_model(out / "best.safetensors", device=str(runtime.device))
        _write_json(out / "metrics.json", evaluate_models(
            [best], dataset, split, config, plot_dir=out, device=runtime.device,
            amp=runtime.amp))
        plot_curves(state["history"], out / "curves.png")
    return out


def _fit(config, runtime, model, dataset, split, loader, sampler, opt, sched, scaler,
         state, featurizer, ema=None, extra_meta=None) -> None:
    """Epoch loop with early stopping; checkpoints after every epoch (rank 0).

    With ``ema`` the averaged weights are validated and kept as best; ``last`` stays raw.
    ``extra_meta`` goes into every checkpoint's metadata.
    """
    out = Path(config.out)
    net = model
    if runtime.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    if loop.use_compile(config.compile, runtime.device):
        net = torch.compile(net, dynamic=True)
    meta = {"targets": config.targets, "featurizer": featurizer,
            "train_config": config.to_dict(), "extra": extra_meta}
    first = state["epoch"]
    last = config.epochs if not config.stop_after_epochs else min(
        config.epochs, first + config.stop_after_epochs)
    for epoch in range(first, last):
        if state["bad_epochs"] >= config.patience:
            break
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed * 7919 + epoch)  # dropout noise; resumable per epoch
            train_loss = loop.train_epoch(
                net, model, loader, opt, sched, scaler, runtime,
                grad_clip=config.grad_clip, progress=config.progress and runtime.is_main,
                ema=ema, distance_noise=config.distance_noise)
        kept = model if ema is None else ema.module  # the weights validated and kept
        trained = time.perf_counter()
        val_loss = _val_loss(kept, dataset, split["val"], config, runtime)
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss,
                                 "val_loss": val_loss, "lr": opt.param_groups[0]["lr"],
                                 "train_s": round(trained - start, 3),
                                 "val_s": round(time.perf_counter() - trained, 3)})
        improved = val_loss < state["best"]
        state["best"] = min(state["best"], val_loss)
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["epoch"] = epoch + 1
        if runtime.is_main:
            if improved:
                save_model(kept, out / "best.safetensors", **meta)
            save_model(model, out / "last.safetensors", **meta)
            extra = {} if ema is None else {"ema": ema.state_dict()}
            save_state({**state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(), **extra}, out / "last_state.pt")
            _write_json(out / "history.json", state["history"])
