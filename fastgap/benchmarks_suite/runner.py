"""Run a suite of tasks: inputs -> cached store -> train (or apply a model) -> results.

Output directory layout::

    <out>/inputs/        sampled JSON-lines subsets (fast setting)
    <out>/stores/        cached feature stores (reused when complete)
    <out>/runs/<task>/   training runs (`fastgap.train` run directories); with ``seeds`` > 1
                         also <task>_seed<S>/ per further seed and <task>_ensemble/ (plots)
    <results>/plots/     parity PNGs, one per task and target
    <results>/results.json, <results>/results.md    (<results> = results_dir or out)
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastgap.benchmarks_suite import inputs
from fastgap.benchmarks_suite.tasks import SETTINGS, Setting, Task, suite_tasks
from fastgap.features import FeaturizerConfig

SYMMETRY_STRUCTURES = {"fast": 12, "full": 200}


@dataclass
class BenchConfig:
    """Options of `run_suite`; the CLI flags map onto these fields.

    Attributes:
        suite: suite name (``fastgap.benchmarks_suite.tasks.SUITES``).
        tasks: task names to run ("" or empty = all; dependencies are added).
        setting: "fast" (smoke: a few hundred structures, 2 epochs) or "full".
        data_root: folder holding ``<dataset>/structures.jsonl.gz``.
        splits_dir: folder holding the split files.
        out: output directory (caches stores and runs; reruns reuse them).
        results_dir: where results.md, results.json and plots/ go ("" = ``out``).
        backend: neighbour-list backend for featurizing.
        workers: featurization worker processes (0 = in process).
        threads: torch CPU threads (0 = torch's default).
        device: training device ("auto", "cpu", "cuda").
        seed: seed of subsampling, training and the symmetry transformations.
        seeds: training runs per training task, seeded ``seed``, ``seed + 1``, ...; with
            more than one the reported metrics are the seed ensemble's, next to the mean and
            std of the single runs.
        n_structures: override the setting's sample size (0 = the setting's; -1 = all).
        epochs: override the setting's epochs (0 = the setting's).
        symmetry_structures: crystals in the symmetry study (0 = the setting's).
        symmetry_variants: random descriptions per crystal and family.
        symmetry_max_atoms: largest crystal (atoms) taken into the symmetry study.
        train_overrides: `fastgap.train.TrainConfig` fields applied to every training task
            after the setting's (a ``model`` dict is merged into the setting's model
            fields), e.g. read from a TOML file by ``fastgap bench --train-config``. In
            ``init_from``, ``{seed}`` stands for the run's seed: with ``seeds`` > 1 each
            seed starts from its own checkpoint (e.g. ``runs/pretrain_s{seed}``).
    """

    suite: str = "default"
    tasks: tuple[str, ...] = ()
    setting: str = "fast"
    data_root: str = "../shared/data"
    splits_dir: str = "benchmarks/splits"
    out: str = "bench_out"
    results_dir: str = ""
    backend: str = "auto"
    workers: int = 0
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    seeds: int = 1
    n_structures: int = 0
    epochs: int = 0
    symmetry_structures: int = 0
    symmetry_variants: int = 4
    symmetry_max_atoms: int = 64
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        _check_overrides(self.train_overrides)
        if self.setting not in SETTINGS:
            raise ValueError(f"setting: expected one of {SETTINGS}, got {self.setting!r}")
        for name in ("workers", "threads", "epochs", "symmetry_structures"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds: expected an int >= 1, got {self.seeds!r}")
        if not isinstance(self.n_structures, int) or self.n_structures < -1:
            raise ValueError(f"n_structures: expected an int >= -1, got {self.n_structures!r}")
        FeaturizerConfig(backend=self.backend)  # validates the backend name


# set per task by the suite or by bench flags; an override would change what a task measures
_FIXED_FIELDS = ("store", "out", "targets", "classification", "where", "target_where", "max_z",
                 "split_file", "seed", "threads", "device", "progress")  # last four: bench flags


def _check_overrides(overrides: Any) -> None:
    """Reject overrides that are not a dict of known, overridable TrainConfig fields."""
    from fastgap.model import ModelConfig
    from fastgap.train import TrainConfig

    if not isinstance(overrides, dict):
        raise TypeError(f"train_overrides: expected a dict, got {type(overrides).__name__}")
    known = set(TrainConfig.__dataclass_fields__) - set(_FIXED_FIELDS)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"train_overrides: unknown or fixed fields {unknown}; "
                         f"fixed per task: {list(_FIXED_FIELDS)}")
    model = overrides.get("model", {})
    if not isinstance(model, dict):
        raise TypeError(f"train_overrides: 'model' must be a table, got {type(model).__name__}")
    bad = sorted(set(model) - set(ModelConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"train_overrides: unknown model fields {bad}")


class Context:
    """Per-run state shared by tasks: config, paths, results of earlier tasks."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.results_dir = Path(config.results_dir or config.out)
        self.featurizer = FeaturizerConfig(backend=config.backend)
        self.results: dict[str, dict[str, Any]] = {}

    def setting(self, task: Task) -> Setting:
        return task.settings[self.config.setting]

    def sample_size(self, task: Task) -> int:
        n = self.config.n_structures or self.setting(task).n_structures
        return max(n, 0)

    def split(self, task: Task) -> tuple[Path | None, dict[str, list[str]] | None]:
        if not task.split:
            return None, None
        path = Path(self.config.splits_dir) / task.split
        return path, inputs.read_split(path)

    def store(self, task: Task) -> tuple[Path, Path, dict[str, Any]]:
        """(input file, store path, featurize summary) of ``task``'s data, cached."""
        src = inputs.dataset_file(self.config.data_root, task.dataset)
        _, split = self.split(task)
        n = self.sample_size(task)
        key = f"{task.dataset}-k{self.featurizer.k}-" + (
            f"n{n}-seed{self.config.seed}" if n > 0 else "all")
        data = inputs.prepare_input(src, self.out, key, split, n, self.config.seed)
        store, info = inputs.feature_store(data, self.out, key, self.featurizer,
                                           self.config.workers)
        return data, store, info


def train_config(ctx: Context, task: Task, store: Path, run_dir: Path, **extra: Any) -> Any:
    """The `fastgap.train.TrainConfig` of ``task`` in the context's setting."""
    from fastgap.model import ModelConfig
    from fastgap.train import TrainConfig

    overrides = dict(ctx.setting(task).train)
    model = dict(overrides.pop("model", {}))
    user = dict(ctx.config.train_overrides)
    model.update(user.pop("model", {}))
    overrides.update(user)
    if ctx.config.epochs:
        overrides["epochs"] = ctx.config.epochs
    split_path, _ = ctx.split(task)
    seed = extra.pop("seed", ctx.config.seed)
    overrides.update(extra)
    if "{seed}" in str(overrides.get("init_from", "")):  # one starting checkpoint per seed
        overrides["init_from"] = str(overrides["init_from"]).replace("{seed}", str(seed))
    return TrainConfig(
        store=str(store), out=str(run_dir), targets=list(task.targets),
        classification=list(task.classification), where=task.where, max_z=task.max_z,
        split_file=str(split_path or ""), seed=seed, threads=ctx.config.threads,
        device=ctx.config.device, progress=False, model=ModelConfig(**model), **overrides,
    )  # fmt: skip


def task_data(ctx: Context, task: Task) -> tuple[Any, Path, dict[str, Any]]:
    """``task``'s featurized data with its derived targets, its store and what to report."""
    data, store, info = ctx.store(task)
    batch = inputs.load_store(store)
    dropped = inputs.apply_derive(batch, task.derive)
    return batch, store, {"store": info, "dropped": dropped, "input": str(data)}


def _same_config(saved: Path, config: Any) -> bool:
    """True when the run's saved config is ``config``; fields the saved one lacks (added to
    `TrainConfig` since) count as their defaults, so older runs are still reused."""
    from fastgap.train import TrainConfig

    if not saved.is_file():
        return False
    try:
        old = TrainConfig(**json.loads(saved.read_text())).to_dict()
    except (TypeError, ValueError):  # fields this version does not know, or invalid values
        return False
    return json.loads(json.dumps(old, default=float)) == json.loads(
        json.dumps(config.to_dict(), default=float))


def fit(ctx: Context, task: Task, run_name: str, prepared: tuple | None = None,
        **extra: Any) -> tuple[Path, dict[str, Any], Any, Any]:
    """Train ``task`` into ``runs/<run_name>`` (reused if finished with the same config).

    ``prepared`` is `task_data`'s result (read when None). Returns (run directory, what to
    report, the resolved `TrainConfig`, the featurized data).
    """
    from fastgap.train import train

    batch, store, info = prepared or task_data(ctx, task)
    run_dir = ctx.out / "runs" / run_name
    cfg = train_config(ctx, task, store, run_dir, **extra)
    if cfg.init_from:  # the run saves the checkpoint's architecture: compare against that
        from fastgap.training.finetune import resolve_init

        cfg = resolve_init(cfg, {"k": ctx.featurizer.k})[0]
    if not (_same_config(run_dir / "config.json", cfg) and (run_dir / "metrics.json").is_file()):
        train(cfg, featurized=batch)
    return run_dir, info, cfg, batch


def _copy_plots(ctx: Context, run_dir: Path, task: str) -> list[str]:
    plots = ctx.results_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    out = []
    for png in sorted(run_dir.glob("parity_*.png")):
        dest = plots / f"{task}_{png.name}"
        shutil.copyfile(png, dest)
        out.append(str(dest.relative_to(ctx.results_dir)))
    return out


def run_train_task(ctx: Context, task: Task) -> dict[str, Any]:
    """Fit and evaluate one training task; metrics are the run's test metrics.

    With ``seeds`` > 1 the task is trained once per seed (``runs/<task>``, then
    ``runs/<task>_seed<S>``); ``test`` / ``val`` are then the metrics of the seed ensemble
    (mean prediction) and ``seeds`` holds every run's metrics and their mean and std.
    """
    from fastgap.benchmarks_suite.seeds import ensemble_metrics, summarise_runs

    seeds = [ctx.config.seed + i for i in range(ctx.config.seeds)]
    prepared = task_data(ctx, task)
    runs = []
    for i, seed in enumerate(seeds):
        name = task.name if i == 0 else f"{task.name}_seed{seed}"
        run_dir, info, cfg, batch = fit(ctx, task, name, prepared, seed=seed)
        runs.append(run_dir)
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    split = json.loads((runs[0] / "split.json").read_text())
    result = {
        **info, "run_dir": str(runs[0]), "n": {p: len(v) for p, v in split.items()},
        "test": metrics["test"], "val": metrics["val"],
    }  # fmt: skip
    plot_dir = runs[0]
    if len(runs) > 1:
        plot_dir = ctx.out / "runs" / f"{task.name}_ensemble"
        ensemble = ensemble_metrics(cfg, runs, batch, plot_dir)
        per_run = [json.loads((d / "metrics.json").read_text()) for d in runs]
        result.update(test=ensemble["test"], val=ensemble["val"])
        result["seeds"] = {"seeds": seeds, "run_dirs": [str(d) for d in runs],
                           "runs": [{"test": m["test"], "val": m["val"]} for m in per_run],
                           "single": summarise_runs(per_run)}
    result["plots"] = _copy_plots(ctx, plot_dir, task.name)
    return result


def _model_of(ctx: Context, task: Task) -> tuple[Any, dict[str, Any]]:
    from fastgap.checkpoint import load_model

    parent = ctx.results.get(task.model_from, {})
    if "run_dir" not in parent:
        raise ValueError(f"model_from: task {task.model_from!r} has no trained model "
                         f"({parent.get('error', 'not run')})")
    path = Path(parent["run_dir"]) / "best.safetensors"
    return load_model(path, featurizer=_identity(ctx))


def _identity(ctx: Context) -> dict[str, Any]:
    return {"k": ctx.featurizer.k}


def run_transfer_task(ctx: Context, task: Task) -> dict[str, Any]:
    """Apply ``model_from``'s model to another dataset (no training) and score it."""
    from fastgap.metrics import regression_metrics
    from fastgap.model import predict_batch
    from fastgap.plots import plot_parity

    model, meta = _model_of(ctx, task)
    data, store, info = ctx.store(task)
    batch = inputs.load_store(store)
    result: dict[str, Any] = {"store": info, "input": str(data), "n": {"test": batch.n_structures},
                              "test": {}, "plots": []}
    (ctx.results_dir / "plots").mkdir(parents=True, exist_ok=True)
    for mode, tta in (("tta", True), ("no_tta", False)):
        pred = predict_batch(model, batch, tta=tta)
        result["test"][mode] = {}
        for name in task.targets:
            j = meta["targets"].index(name)
            true = np.asarray(batch.properties[name], dtype=np.float64)
            result["test"][mode][name] = regression_metrics(true, pred[:, j])
            nonzero = np.where(true > 0, true, np.nan)
            result["test"][mode][f"{name} (true > 0)"] = regression_metrics(nonzero, pred[:, j])
            if tta:
                png = ctx.results_dir / "plots" / f"{task.name}_parity_{name}.png"
                plot_parity(true, pred[:, j], name, png)
                result["plots"].append(str(png.relative_to(ctx.results_dir)))
    return result


def run_symmetry_task(ctx: Context, task: Task) -> dict[str, Any]:
    """The symmetry study on test crystals with the augmented and a non-augmented model."""
    from fastgap.checkpoint import load_model
    from fastgap.symmetry import SymmetryConfig, symmetry_spread

    parent = ctx.results.get(task.model_from, {})
    if "run_dir" not in parent:
        raise ValueError(f"model_from: task {task.model_from!r} has no trained model")
    aug_dir = Path(parent["run_dir"])
    noaug_dir = fit(ctx, task, f"{task.model_from}_noaug", augment=False)[0]
    data, store, _ = ctx.store(task)
    batch = inputs.load_store(store)
    sizes = dict(zip(batch.ids.tolist(), np.diff(batch.atom_ptr).tolist()))
    test = json.loads((aug_dir / "split.json").read_text())["test"]
    test = [i for i in test if sizes.get(i, 10**9) <= ctx.config.symmetry_max_atoms]
    n = ctx.config.symmetry_structures or SYMMETRY_STRUCTURES[ctx.config.setting]
    rng = np.random.default_rng(ctx.config.seed)
    ids = sorted(rng.choice(test, size=min(n, len(test)), replace=False).tolist())
    structures = inputs.read_structures_by_id(data, ids)
    cfg = SymmetryConfig(n_variants=ctx.config.symmetry_variants, seed=ctx.config.seed)
    rows = []
    for label, run_dir in (("augmented", aug_dir), ("not augmented", noaug_dir)):
        model, meta = load_model(run_dir / "best.safetensors", featurizer=_identity(ctx))
        for row in symmetry_spread(model, structures, meta["targets"], ctx.featurizer, cfg):
            rows.append({"model": label, **row})
    return {"n": {"test": len(structures)}, "rows": rows, "symmetry_config": asdict(cfg),
            "runs": {"augmented": str(aug_dir), "not augmented": str(noaug_dir)}}


RUNNERS = {"train": run_train_task, "transfer": run_transfer_task, "symmetry": run_symmetry_task}


def run_tasks(config: BenchConfig, tasks: list[Task]) -> list[dict[str, Any]]:
    """Run ``tasks`` in order; a failing task is recorded with its error and the run goes on."""
    ctx = Context(config)
    ctx.out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    results = []
    for task in tasks:
        start = time.perf_counter()
        base = {"task": task.name, "kind": task.kind, "description": task.description,
                "dataset": task.dataset, "targets": list(task.targets),
                "setting": config.setting, "references": [asdict(r) for r in task.references],
                "goals": dict(task.goals), "notes": task.notes}  # fmt: skip
        try:
            body = RUNNERS[task.kind](ctx, task)
        except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
            body = {"error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=4)}
        result = {**base, **body, "seconds": round(time.perf_counter() - start, 2)}
        ctx.results[task.name] = result
        results.append(result)
    return results


def run_suite(config: BenchConfig | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Run ``config``'s suite; write results.json / results.md; returns (results, out dir)."""
    from fastgap.benchmarks_suite.report import write_results

    config = config or BenchConfig()
    tasks = suite_tasks(config.suite, list(config.tasks) or None)
    results = run_tasks(config, tasks)
    out = Path(config.results_dir or config.out)
    write_results(results, config, out)
    return results, out
