"""``fastgap bench``: a named suite of property tasks on fixed splits, with published values.

The same structure-only model is trained per task (band gap, metal classification,
formation energy, log10 elastic moduli, QM9 orbital energies), applied to other datasets
(transfer) and probed for invariance (the symmetry study, `fastgap.symmetry`). Settings:
``fast`` (smoke: a few hundred structures, 2 epochs, a small model) and ``full`` (all
data). Implementation in `fastgap.benchmarks_suite`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastgap.benchmarks_suite.runner import BenchConfig, run_suite
from fastgap.benchmarks_suite.tasks import SUITES, Reference, Task, suite_tasks

__all__ = ["SUITES", "BenchConfig", "Reference", "Task", "run_bench", "suite_tasks"]


def run_bench(config: BenchConfig | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Run the configured suite; returns the per-task results and the output directory.

    Writes ``<out>/results.json``, ``<out>/results.md`` and ``<out>/plots/*.png``.
    """
    return run_suite(config)
