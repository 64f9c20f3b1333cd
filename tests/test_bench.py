"""The bench suite end to end on tiny fixtures, plus its input handling and validation."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastgap.bench import BenchConfig, Task, run_bench, suite_tasks
from fastgap.benchmarks_suite import inputs
from fastgap.benchmarks_suite.tasks import SETTINGS

DATA = Path(__file__).parent / "data" / "bench"
SPLITS = DATA / "splits"


def _config(out: Path, **kw: Any) -> BenchConfig:
    return BenchConfig(data_root=str(DATA), splits_dir=str(SPLITS), out=str(out),
                       backend="reference", epochs=1, threads=1, **kw)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    tasks = ("gap_nonzero", "elastic", "qm9_orbitals", "transfer_jarvis")
    results, out = run_bench(_config(out, tasks=tasks))
    return {r["task"]: r for r in results}, out


def _records(dataset: str) -> list[dict[str, Any]]:
    with gzip.open(DATA / dataset / "structures.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh]


def test_smoke_runs_every_task_and_writes_results(smoke: tuple[dict, Path]) -> None:
    by_task, out = smoke
    # transfer_jarvis pulls in the task whose model it applies
    assert list(by_task) == ["gap_nonzero", "gap_all", "elastic", "qm9_orbitals",
                             "transfer_jarvis"]
    for name, r in by_task.items():
        assert "error" not in r, (name, r.get("error"))
    saved = json.loads((out / "results.json").read_text())
    assert [r["task"] for r in saved["results"]] == list(by_task)
    md = (out / "results.md").read_text()
    for name in by_task:
        assert f"| {name} |" in md
    assert "CGCNN 0.071" in md and "SchNet 0.063" in md
    assert (out / "plots" / "elastic_parity_log10_K_VRH.png").is_file()


def test_filters_and_split_restriction(smoke: tuple[dict, Path]) -> None:
    by_task, _ = smoke
    split = inputs.read_split(SPLITS / "mp_gap36k.json")
    gaps = {r["id"]: r["properties"]["band_gap_eV"] for r in _records("mp_gap36k")}
    want = {p: sum(gaps[i] > 0 for i in ids) for p, ids in split.items()}
    assert by_task["gap_nonzero"]["n"] == want
    assert by_task["gap_all"]["n"] == {p: len(ids) for p, ids in split.items()}


def test_multi_target_with_missing_values_stays_finite(smoke: tuple[dict, Path]) -> None:
    """Four G and one K values are non-positive -> missing; without the mask the loss is NaN."""
    r = smoke[0]["elastic"]
    assert r["dropped"] == {"log10_K_VRH_dropped_nonpositive": 1,
                            "log10_G_VRH_dropped_nonpositive": 4}
    history = json.loads((Path(r["run_dir"]) / "history.json").read_text())
    assert all(math.isfinite(h["train_loss"]) for h in history)
    for mode in ("tta", "no_tta"):
        for target in ("log10_K_VRH", "log10_G_VRH"):
            assert math.isfinite(r["test"][mode][target]["mae"])
    qm9 = smoke[0]["qm9_orbitals"]["test"]["tta"]
    assert set(qm9) == {"homo_eV", "lumo_eV", "gap_eV"}
    assert all(math.isfinite(m["mae"]) for m in qm9.values())


def test_transfer_scores_every_record(smoke: tuple[dict, Path]) -> None:
    r = smoke[0]["transfer_jarvis"]
    assert r["n"] == {"test": 10}
    assert r["test"]["tta"]["band_gap_eV"]["n"] == 10
    assert math.isfinite(r["test"]["tta"]["band_gap_eV"]["mae"])


def test_rerun_reuses_stores_and_runs(smoke: tuple[dict, Path]) -> None:
    _, out = smoke
    best = out / "runs" / "elastic" / "best.safetensors"
    before = best.stat().st_mtime_ns
    results, _ = run_bench(_config(out, tasks=("elastic",)))
    assert best.stat().st_mtime_ns == before
    assert results[0]["test"] == smoke[0]["elastic"]["test"]


def test_fine_tune_through_the_suite_and_its_rerun(smoke: tuple[dict, Path], tmp_path) -> None:
    source = smoke[1] / "runs" / "gap_nonzero"
    config = _config(tmp_path, tasks=("elastic",), train_overrides={"init_from": str(source)})
    first, _ = run_bench(config)
    assert "error" not in first[0], first[0].get("error")
    init = json.loads((tmp_path / "runs" / "elastic" / "init.json").read_text())
    assert init["source_targets"] == ["band_gap_eV"] and init["kept"] == []
    assert init["fresh"] == ["log10_K_VRH", "log10_G_VRH"]
    best = tmp_path / "runs" / "elastic" / "best.safetensors"
    before = best.stat().st_mtime_ns
    # a run saved before a field was added to TrainConfig: the field counts as its default
    saved = tmp_path / "runs" / "elastic" / "config.json"
    older = json.loads(saved.read_text())
    assert older.pop("ema_decay") == 0.0
    saved.write_text(json.dumps(older))
    again, _ = run_bench(config)  # the resolved architecture matches the saved run: reused
    assert best.stat().st_mtime_ns == before and again[0]["test"] == first[0]["test"]


def test_seeds_report_the_ensemble_and_the_single_runs(smoke: tuple[dict, Path],
                                                        tmp_path: Path) -> None:
    """Seeds 0 and 1: the first run is the one-seed run; the ensemble is their mean."""
    from fastgap.checkpoint import load_model
    from fastgap.model import predict_dataset
    from fastgap.train import TrainConfig
    from fastgap.training.run import prepare_data

    results, out = run_bench(_config(tmp_path, tasks=("elastic",), seeds=2))
    r = results[0]
    assert "error" not in r, r.get("error")
    one = smoke[0]["elastic"]
    runs = [Path(d) for d in r["seeds"]["run_dirs"]]
    assert r["seeds"]["seeds"] == [0, 1] and [d.name for d in runs] == ["elastic", "elastic_seed1"]
    assert r["seeds"]["runs"][0]["test"] == one["test"]  # seed 0 trains what one seed trains
    assert r["seeds"]["runs"][0] != r["seeds"]["runs"][1]
    cfg = TrainConfig(**json.loads((runs[0] / "config.json").read_text()))
    batch = inputs.load_store(Path(cfg.store))
    inputs.apply_derive(batch, next(t for t in suite_tasks("default") if t.name == "elastic").derive)
    dataset, split = prepare_data(cfg, batch)
    preds = [predict_dataset(load_model(d / "best.safetensors")[0], dataset, split["test"], tta=True)
             for d in runs]
    true = dataset.targets[split["test"]].double().numpy()
    for j, name in enumerate(cfg.targets):
        maes = [float(np.nanmean(np.abs(p[:, j] - true[:, j]))) for p in preds]  # NaN: missing
        ensemble = float(np.nanmean(np.abs((preds[0][:, j] + preds[1][:, j]) / 2 - true[:, j])))
        assert r["test"]["tta"][name]["mae"] == pytest.approx(ensemble, rel=1e-6)
        single = r["seeds"]["single"]["test"]["tta"][name]["mae"]
        assert single["mean"] == pytest.approx(np.mean(maes), rel=1e-6)
        assert single["std"] == pytest.approx(np.std(maes, ddof=1), rel=1e-6)
        assert ensemble <= np.mean(maes) + 1e-12  # |mean error| <= mean |error|
    md = (out / "results.md").read_text()
    assert "## Seeds" in md and "| elastic | log10_K_VRH | 2 | MAE " in md
    assert (out / "plots" / "elastic_parity_log10_K_VRH.png").is_file()
    assert (tmp_path / "runs" / "elastic_ensemble" / "parity_log10_K_VRH.png").is_file()


def test_seed_placeholder_starts_each_seed_from_its_own_checkpoint(
        smoke: tuple[dict, Path], tmp_path: Path) -> None:
    runs = smoke[1] / "runs"
    sources = tmp_path / "sources"
    for seed in (3, 4):  # two "pretrained" checkpoints, copies of finished smoke runs
        shutil.copytree(runs / "gap_nonzero", sources / f"pre_s{seed}")
    config = _config(tmp_path / "out", tasks=("elastic",), seed=3, seeds=2,
                     train_overrides={"init_from": str(sources / "pre_s{seed}")})
    results, _ = run_bench(config)
    assert "error" not in results[0], results[0].get("error")
    for name, seed in (("elastic", 3), ("elastic_seed4", 4)):
        run = tmp_path / "out" / "runs" / name
        init = json.loads((run / "init.json").read_text())
        assert init["checkpoint"] == str(sources / f"pre_s{seed}" / "best.safetensors")
        assert json.loads((run / "config.json").read_text())["seed"] == seed


def test_symmetry_task_rows(tmp_path: Path) -> None:
    results, _ = run_bench(_config(tmp_path, tasks=("symmetry",), symmetry_structures=2,
                                   symmetry_variants=1))
    sym = results[-1]
    assert "error" not in sym, sym.get("error")
    assert len(sym["rows"]) == 7 * 2 * 2  # families x models x TTA modes
    rot = [r for r in sym["rows"] if r["family"] == "rotation"]
    assert all(r["max_std"] < 1e-5 for r in rot)  # rotation leaves the model's input unchanged
    assert "## Symmetry study" in (tmp_path / "results.md").read_text()


def test_failing_task_is_recorded_and_cli_exit_code(tmp_path: Path) -> None:
    from fastgap.cli import main

    argv = ["bench", "--tasks", "eform_4k", "--data-root", str(DATA), "--splits-dir",
            str(SPLITS), "--out", str(tmp_path), "--backend", "reference",
            "--results-dir", str(tmp_path / "res")]
    assert main(argv) == 1
    assert not (tmp_path / "results.json").exists()
    saved = json.loads((tmp_path / "res" / "results.json").read_text())["results"]
    assert "data_root: no dataset file" in saved[0]["error"]
    assert main(["bench", "--list"]) == 0


def test_sample_ids_is_proportional_and_seeded() -> None:
    parts = {"train": [f"a{i}" for i in range(80)], "val": [f"b{i}" for i in range(10)],
             "test": [f"c{i}" for i in range(10)]}
    got = inputs.sample_ids(parts, 20, np.random.default_rng(1))
    assert sum(i[0] == "a" for i in got) == 16 and sum(i[0] == "b" for i in got) == 2
    assert got == inputs.sample_ids(parts, 20, np.random.default_rng(1))
    assert len(inputs.sample_ids(parts, 0, np.random.default_rng(1))) == 100


def test_apply_derive_log10_and_counts() -> None:
    from fastgap.synthetic import synthetic_featurized

    batch = synthetic_featurized(4, np.random.default_rng(0))
    batch.properties["K"] = np.array([100.0, 0.0, -1.0, np.nan])
    dropped = inputs.apply_derive(batch, [("logK", "log10", "K")])
    np.testing.assert_array_equal(batch.properties["logK"], [2.0, np.nan, np.nan, np.nan])
    assert dropped == {"logK_dropped_nonpositive": 2}
    with pytest.raises(ValueError, match="derive: property 'G' not in the data"):
        inputs.apply_derive(batch, [("logG", "log10", "G")])
    with pytest.raises(ValueError, match="derive: expected op 'log10'"):
        inputs.apply_derive(batch, [("lnK", "ln", "K")])


def test_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data_root: no dataset file"):
        inputs.dataset_file(tmp_path, "nothing")
    with pytest.raises(FileNotFoundError, match="split: no split file"):
        inputs.read_split(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"train": []}')
    with pytest.raises(ValueError, match="split: expected keys"):
        inputs.read_split(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="ids: 1 not found"):
        inputs.read_structures_by_id(DATA / "jarvis_sample50" / "structures.jsonl.gz", ["x"])


def test_config_and_task_validation() -> None:
    with pytest.raises(ValueError, match="setting: expected one of"):
        BenchConfig(setting="medium")
    with pytest.raises(ValueError, match="workers: expected an int >= 0"):
        BenchConfig(workers=-1)
    with pytest.raises(ValueError, match="n_structures: expected an int >= -1"):
        BenchConfig(n_structures=-2)
    with pytest.raises(ValueError, match="seeds: expected an int >= 1"):
        BenchConfig(seeds=0)
    with pytest.raises(ValueError, match="backend: expected one of"):
        BenchConfig(backend="gpu")
    with pytest.raises(ValueError, match="suite: expected one of"):
        suite_tasks("huge")
    with pytest.raises(ValueError, match="tasks: unknown"):
        suite_tasks("default", ["gap_nonzero", "nope"])
    with pytest.raises(ValueError, match="kind: expected one of"):
        Task("t", "fit", "d", ("y",), "x")
    with pytest.raises(ValueError, match="model_from: a transfer task needs"):
        Task("t", "transfer", "d", ("y",), "x")
    with pytest.raises(ValueError, match="derive: expected op 'log10'"):
        Task("t", "train", "d", ("y",), "x", derive=(("y", "ln", "z"),))
    with pytest.raises(ValueError, match="settings: expected entries"):
        Task("t", "train", "d", ("y",), "x", settings={"fast": SETTINGS})  # type: ignore[dict-item]


def test_default_suite_covers_the_published_targets() -> None:
    tasks = {t.name: t for t in suite_tasks("default")}
    assert tasks["eform_4k"].goals == {"formation_energy_eV_per_atom": 0.035}
    assert tasks["elastic"].goals == {"log10_K_VRH": 0.06, "log10_G_VRH": 0.08}
    assert tasks["qm9_orbitals"].goals == {"gap_eV": 0.10}
    assert tasks["gap_nonzero"].max_z == 85 and tasks["gap_nonzero"].where == "band_gap_eV > 0"
    values = {(r.model, r.value) for t in tasks.values() for r in t.references}
    assert {("CGCNN", 0.039), ("MEGNet", 0.028), ("CGCNN", 0.388), ("MEGNet", 0.33),
            ("SchNet", 0.063), ("MEGNet", 0.066)} <= values


def test_train_overrides_reach_the_training_config(tmp_path: Path) -> None:
    from fastgap.benchmarks_suite.runner import Context, train_config

    task = suite_tasks("default", ["elastic"])[0]
    overrides = {"weight_decay": 0.05, "epochs": 7, "model": {"element_features": "physical"}}
    ctx = Context(_config(tmp_path, setting="full", train_overrides=overrides))
    cfg = train_config(ctx, task, tmp_path / "store", tmp_path / "run")
    assert cfg.weight_decay == 0.05 and cfg.model.element_features == "physical"
    assert cfg.epochs == 1  # the --epochs flag (1 in _config) wins over the overrides
    assert cfg.batch_size == 64  # the full setting's value is kept where not overridden
    assert cfg.targets == list(task.targets)
    plain = train_config(Context(_config(tmp_path, setting="full")), task, tmp_path, tmp_path)
    assert plain.model.element_features == "learned" and plain.weight_decay != 0.05


def test_train_overrides_validation() -> None:
    with pytest.raises(TypeError, match="train_overrides: expected a dict"):
        BenchConfig(train_overrides=[("lr", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown or fixed fields \['targets'\]"):
        BenchConfig(train_overrides={"targets": ["x"]})
    with pytest.raises(ValueError, match=r"unknown or fixed fields \['nope'\]"):
        BenchConfig(train_overrides={"nope": 1})
    with pytest.raises(TypeError, match="'model' must be a table"):
        BenchConfig(train_overrides={"model": 3})
    with pytest.raises(ValueError, match=r"unknown model fields \['width'\]"):
        BenchConfig(train_overrides={"model": {"width": 3}})
