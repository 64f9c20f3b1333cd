"""results.json and results.md of a suite run: our numbers beside the published ones."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

CAVEAT = ("Published values come from other dataset sizes, releases and protocols; they are "
          "context, not like-for-like comparisons.")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """CPU model, core count, Python, torch and fastgap versions."""
    import torch

    from fastgap._version import __version__

    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, fastgap {__version__}")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _score(metrics: dict[str, Any]) -> str:
    if "mae" in metrics:
        return f"MAE {_fmt(metrics['mae'])}"
    if "accuracy" in metrics:
        return f"acc {_fmt(metrics['accuracy'])}, AUC {_fmt(metrics['roc_auc'])}"
    return "-"


def _published(result: dict[str, Any], target: str) -> str:
    refs = [r for r in result.get("references", []) if r.get("target", "") in ("", target)]
    return "; ".join(f"{r['model']} {r['value']:g}" for r in refs) or "-"


def _table_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        if r["kind"] == "symmetry":
            continue
        if "error" in r:
            rows.append(f"| {r['task']} | {r['dataset']} | - | - | failed: {r['error']} | | | |")
            continue
        n = r.get("n", {})
        sizes = "/".join(str(n.get(p, "-")) for p in ("train", "val", "test"))
        for name, m in r["test"]["tta"].items():
            if r["kind"] == "transfer":
                sizes = f"-/-/{m['n']}"
            no_tta = r["test"]["no_tta"].get(name, {})
            goal = r["goals"].get(name)
            rows.append(
                f"| {r['task']} | {r['dataset']} | {name} | {sizes} | {_score(m)} | "
                f"{_score(no_tta)} | {_fmt(goal) if goal else '-'} | {_published(r, name)} |"
            )
    return rows


def _symmetry_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        for row in r.get("rows", []):
            rows.append(
                f"| {row['family']} | {row['model']} | {'yes' if row['tta'] else 'no'} | "
                f"{row['target']} | {row['n_structures']} | {_fmt(row['mean_std'], 4)} | "
                f"{_fmt(row['max_std'], 4)} |"
            )
    return rows


def _spread(metrics: dict[str, Any]) -> str:
    """'MAE mean ± std' (or accuracy / AUC) of single runs from `summarise_runs`."""
    def pm(key: str) -> str:
        return f"{_fmt(metrics[key]['mean'])} ± {_fmt(metrics[key]['std'])}"

    if "mae" in metrics:
        return f"MAE {pm('mae')}"
    if "accuracy" in metrics:
        return f"acc {pm('accuracy')}, AUC {pm('roc_auc')}"
    return "-"


def _seed_rows(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        seeds = r.get("seeds")
        if not seeds:
            continue
        single = seeds["single"]
        for name, m in r["test"]["tta"].items():
            rows.append(
                f"| {r['task']} | {name} | {len(seeds['seeds'])} | "
                f"{_spread(single['test']['tta'][name])} | {_score(m)} | "
                f"{_spread(single['val']['tta'][name])} | {_score(r['val']['tta'][name])} |"
            )
    return rows


def to_markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results table (test split; TTA = averaged over axis-swap atom orders)."""
    lines = [
        f"# fastgap bench: suite {meta['suite']}, setting {meta['setting']}", "",
        f"{meta['date']}; {meta['machine']}", "",
        ("Test-split scores. n = train/val/test structures after filters. TTA = prediction "
         "averaged over the distinct axis-swap atom orders. Tasks run with several seeds "
         "show the seed ensemble (see Seeds)."), "", CAVEAT, "",
        "| task | dataset | target | n | ours (TTA) | ours (no TTA) | goal (MAE) | published MAE |",
        "|---|---|---|---|---|---|---|---|",
        *_table_rows(results),
    ]  # fmt: skip
    overrides = meta.get("config", {}).get("train_overrides")
    if overrides:
        lines += ["", f"Training overrides on top of the setting: `{json.dumps(overrides)}`"]
    seeds = _seed_rows(results)
    if seeds:
        lines += ["", "## Seeds", "",
                  ("Tasks trained once per seed: the main table shows the seed ensemble (mean "
                   "prediction); here the single runs' mean ± std (ddof 1) beside it, TTA."),
                  "", ("| task | target | seeds | single runs, test | ensemble, test | "
                       "single runs, val | ensemble, val |"), "|---|---|---|---|---|---|---|",
                  *seeds]
    sym = _symmetry_rows(results)
    if sym:
        lines += ["", "## Symmetry study", "",
                  ("Std of the predictions over the original and its equivalent descriptions, "
                   "mean and max over crystals (target units)."), "",
                  "| family | model | TTA | target | crystals | mean std | max std |",
                  "|---|---|---|---|---|---|---|", *sym]  # fmt: skip
    lines += ["", "## Tasks", ""]
    for r in results:
        extra = {k: v for k, v in r.get("dropped", {}).items() if v}
        lines.append(f"- **{r['task']}** ({r['seconds']} s): {r['description']}. {r['notes']}"
                     + (f" Dropped: {extra}." if extra else ""))
        for ref in r.get("references", []):
            which = f" ({ref['target']})" if ref.get("target") else ""
            lines.append(f"  - {ref['model']}{which}: {ref['metric']} {ref['value']:g} "
                         f"{ref['unit']}; {ref['source']}; {ref['protocol']}")
    return "\n".join(lines) + "\n"


def write_results(results: list[dict[str, Any]], config: Any, out: Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out``; returns both paths."""
    meta = {"suite": config.suite, "setting": config.setting, "config": asdict(config),
            "machine": machine_line(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(json.dumps({"meta": meta, "caveat": CAVEAT, "results": results}, indent=2,
                             default=float) + "\n")
    md = out / "results.md"
    md.write_text(to_markdown(results, meta))
    return js, md
