"""``fastgap bench``: run the benchmark suite and write results.md / results.json."""

from __future__ import annotations

import argparse

help = "run the property benchmark suite (fast smoke or full setting) with published values"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="default", help="suite name")
    parser.add_argument("--tasks", default="",
                        help="comma-separated task names (default: all; dependencies added)")
    parser.add_argument("--setting", default="fast", choices=("fast", "full"),
                        help="fast = smoke run (few hundred structures, 2 epochs); full")
    parser.add_argument("--data-root", default="../shared/data",
                        help="folder with <dataset>/structures.jsonl.gz")
    parser.add_argument("--splits-dir", default="benchmarks/splits", help="split files")
    parser.add_argument("--out", default="bench_out", help="output directory (caches reused)")
    parser.add_argument("--results-dir", default="",
                        help="where results.md, results.json and plots/ go (default: --out)")
    parser.add_argument("--backend", default="auto", help="neighbour-list backend")
    parser.add_argument("--workers", type=int, default=0, help="featurization processes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="training runs per task (seeds SEED, SEED+1, ...); more than one "
                             "reports the seed ensemble and the single runs' mean and std")
    parser.add_argument("--n-structures", type=int, default=0,
                        help="override the sample size (0 = the setting's, -1 = all)")
    parser.add_argument("--epochs", type=int, default=0, help="override epochs (0 = setting's)")
    parser.add_argument("--symmetry-structures", type=int, default=0,
                        help="crystals in the symmetry study (0 = the setting's)")
    parser.add_argument("--train-config", default="",
                        help="TOML of training fields ([model] table too) applied to every "
                             "training task on top of the setting")
    parser.add_argument("--list", action="store_true", help="list the suite's tasks and exit")


def run(args: argparse.Namespace) -> int:
    from fastgap.bench import BenchConfig, run_bench, suite_tasks

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if args.list:
        for task in suite_tasks(args.suite):
            print(f"{task.name:22s} {task.kind:9s} {task.dataset:16s} {task.description}")
        return 0
    overrides = {}
    if args.train_config:
        from pathlib import Path

        import tomllib

        overrides = tomllib.loads(Path(args.train_config).read_text())
    config = BenchConfig(
        suite=args.suite, tasks=tasks, setting=args.setting, data_root=args.data_root,
        splits_dir=args.splits_dir, out=args.out, results_dir=args.results_dir,
        backend=args.backend, workers=args.workers,
        threads=args.threads, device=args.device, seed=args.seed, seeds=args.seeds,
        n_structures=args.n_structures, epochs=args.epochs,
        symmetry_structures=args.symmetry_structures, train_overrides=overrides,
    )
    results, out = run_bench(config)
    failed = [r["task"] for r in results if "error" in r]
    print((out / "results.md").read_text())
    for r in results:
        if "error" in r:
            print(f"task {r['task']} failed: {r['error']}")
    return 1 if failed else 0
