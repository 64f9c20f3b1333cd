"""Writing model bundles: pack checkpoints into a bundle directory with its ``card.json``
(`pack_bundle`, with each member's provenance) and render the card as ``MODEL_CARD.md``
(`write_model_card`). Reading and combining bundles: `fastgap.ensemble`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fastgap._version import __version__
from fastgap.digest import file_sha256
from fastgap.domain import (
    ELEMENTS_KEY,
    KINDS,
    PERIODICITY_KEY,
    check_counts,
    describe,
    periodicity_counts,
    shared_kinds,
)
from fastgap.ensemble import BUNDLE_FORMAT, CARD_NAME, check_std_scale, load_bundle

MP_GAP36K = ("mp_gap36k: Materials Project (VASP PBE / PBE+U) band gaps, CGCNN id list, "
             "retrieved about 2020; CC BY 4.0")


def source_fields(data: str | Path, split: str | Path, limit: int,
                  description: str = MP_GAP36K) -> dict[str, Any]:
    """The card fields every bundle script writes alike: the training data (path, sha256,
    records used, ``description``), the split file (name, sha256), the combination rule and
    today's date (``limit`` 0 = all records)."""
    import datetime

    from fastgap.ensemble import COMBINATION_RULE

    return {
        "data": {"path": str(data), "sha256": file_sha256(Path(data)),
                 "records_used": int(limit) or "all", "description": description},
        "split": {"path": Path(split).name, "sha256": file_sha256(Path(split))},
        "combination_rule": COMBINATION_RULE,
        "date": datetime.date.today().isoformat(),
    }


def pack_bundle(
    out: str | Path,
    band_gap: list[str | Path],
    metal: list[str | Path],
    card: dict[str, Any] | None = None,
    others: list[str | Path] = (),
) -> Path:
    """Copy checkpoints into a bundle directory ``out`` and write its ``card.json``.

    ``band_gap`` / ``metal`` / ``others`` are checkpoint files (or training run directories,
    whose ``best.safetensors`` is used); they are renamed ``gap_<i>`` / ``metal_<i>`` /
    ``model_<i>``. ``others`` predict other properties: each of their targets becomes an
    output column, the mean over the members that predict it. A checkpoint
    given in both lists (one network predicting band gap and ``is_metal``) is copied once,
    under its ``gap_<i>`` name, and listed in both roles: it runs once per batch. ``card``
    adds descriptive fields (data, split, command, metrics); the format fields are set here.
    """
    from fastgap.training.finetune import packaged_path  # imports torch: not at module load

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shipped = packaged_path()
    shipped_sha256 = file_sha256(shipped) if shipped.is_file() else None
    members: dict[str, list[str]] = {"band_gap": [], "metal": [], "others": []}
    provenance: dict[str, dict[str, Any]] = {}
    copied: dict[Path, str] = {}  # source checkpoint -> its name in the bundle
    for role, prefix, paths in (("band_gap", "gap", band_gap), ("metal", "metal", metal),
                                ("others", "model", others)):
        for i, src in enumerate(paths):
            src = Path(src)
            if src.is_dir():
                src = src / "best.safetensors"
            if not src.is_file():
                raise FileNotFoundError(f"{role}: no checkpoint at {str(src)!r}")
            if src.resolve() in copied:
                members[role].append(copied[src.resolve()])
                continue
            name = f"{prefix}_{i}.safetensors"
            shutil.copyfile(src, out / name)
            copied[src.resolve()] = name
            members[role].append(name)
            provenance[name] = member_provenance(src, shipped_sha256)
    members = {role: names for role, names in members.items() if names or role != "others"}
    full = {**(card or {}), "bundle_format": BUNDLE_FORMAT, "fastgap_version": __version__,
            "members": members, "provenance": provenance}  # fmt: skip
    (out / CARD_NAME).write_text(json.dumps(full, indent=2) + "\n")
    load_bundle(out)  # refuse to leave a bundle behind that would not load
    return out


def member_provenance(checkpoint: Path, shipped_sha256: str | None = None) -> dict[str, Any]:
    """Where a member comes from: its training run's name and seed and, for a fine-tuned
    run (``init.json`` beside the checkpoint), the starting checkpoint's run and sha256,
    marked as the shipped pretrained model when it has ``shipped_sha256``."""
    run = checkpoint.absolute().parent
    info: dict[str, Any] = {"run": run.name,
                            "sha256": file_sha256(checkpoint)}
    config = run / "config.json"
    if config.is_file():
        resolved = json.loads(config.read_text())
        info.update(seed=resolved.get("seed"), epochs=resolved.get("epochs"))
    counts = training_periodicity(checkpoint)
    if counts is not None:
        info[PERIODICITY_KEY] = counts
    init = run / "init.json"
    if init.is_file():
        start = json.loads(init.read_text())
        info["init_from"] = {"run": Path(start.get("checkpoint", "?")).parent.name,
                             "sha256": start.get("sha256")}
        if shipped_sha256 is not None and start.get("sha256") == shipped_sha256:
            info["init_from"]["shipped"] = "fastgap/models/pretrained"
    return info


def training_periodicity(checkpoint: Path) -> dict[str, int] | None:
    """Structures of each periodicity kind (`fastgap.domain`) the checkpoint was trained on.

    From the checkpoint's metadata; for a checkpoint written before it was recorded, from
    its run directory (the training ids of ``split.json`` looked up in the store named by
    ``config.json``). None when neither is available.
    """
    from fastgap.checkpoint import read_metadata

    counts = read_metadata(checkpoint).get(PERIODICITY_KEY)
    if counts is not None:
        return check_counts(counts, f"{checkpoint}: {PERIODICITY_KEY}")
    run = checkpoint.absolute().parent
    config, split = run / "config.json", run / "split.json"
    if not (config.is_file() and split.is_file()):
        return None
    store_path = json.loads(config.read_text()).get("store", "")
    if not store_path or not (Path(store_path) / "zarr.json").is_file():
        return None
    from fastgap.store import Store

    store = Store.open(store_path)
    train = np.isin(store.ids.astype(str), json.loads(split.read_text())["train"])
    return periodicity_counts(store.pbc[train])


def _member_lines(card: dict[str, Any]) -> list[str]:
    """One line per member file: role, training run, seed and starting checkpoint."""
    provenance = card.get("provenance", {})
    lines = []
    for role, names in card["members"].items():
        for name in names:
            info = provenance.get(name)
            if not info:
                lines.append(f"- {role}: {name}")
                continue
            start = info.get("init_from")
            origin = "trained from scratch"
            if start:
                shipped = (f", the model shipped in `{start['shipped']}`" if "shipped" in start
                           else "")
                origin = (f"fine-tuned from `{start['run']}` "
                          f"(sha256 {str(start['sha256'])[:12]}{shipped})")
            lines.append(f"- {role}: {name} <- run `{info['run']}`, seed {info.get('seed')}, "
                         f"{info.get('epochs')} epochs at most, {origin}")
    return lines


def write_model_card(bundle_dir: str | Path, metrics: dict[str, Any] | None = None,
                     calibration: dict[str, Any] | None = None) -> Path:
    """Store ``metrics`` and/or ``calibration`` in the bundle's card.json (None = keep the
    card's) and (re)write MODEL_CARD.md from it.

    ``calibration`` must hold ``std_scale`` (finite, > 0), the factor applied to
    ``band_gap_std_eV``; its other fields (method, split, command, ...) are descriptive.
    """
    bundle_dir = Path(bundle_dir)
    card = json.loads((bundle_dir / CARD_NAME).read_text())
    if metrics is not None:
        card["metrics"] = metrics
    if calibration is not None:
        check_std_scale(calibration.get("std_scale"), "calibration.std_scale")
        card["calibration"] = calibration
    metrics = card.get("metrics", {})
    (bundle_dir / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    gap_lines = _gap_rule_lines(card) if any(
        card["members"].get(role) for role in ("band_gap", "metal")) else []
    lines = [
        f"# {card.get('name', 'fastgap model bundle')}", "",
        (f"fastgap {card['fastgap_version']}, bundle format {card['bundle_format']}, "
        f"trained {card.get('date', '?')}."), "",
        "## Members", "",
        *_member_lines(card), "",
        "## Data and split", "",
        f"- data: {json.dumps(card.get('data', {}))}",
        f"- split: {json.dumps(card.get('split', {}))}",
        f"- filters: {json.dumps(card.get('filters', {}))}",
        *_domain_lines(card), "",
        *gap_lines,
        *_other_output_lines(bundle_dir, card),
        "## Metrics", "",
        "```json", json.dumps(metrics, indent=2), "```", "",
        "## Reproduce", "", f"`{card.get('command', '?')}`", "",
    ]
    path = bundle_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _gap_rule_lines(card: dict[str, Any]) -> list[str]:
    """The card's sections on the band-gap columns: combination rule and calibration."""
    return [
        "## Combination rule", "",
        ("`band_gap_eV` is 0.0 where `p_metal >= 0.5` (mean of the classifiers' probability "
        "that the DFT gap is 0). Elsewhere it is the median of the predictive distribution "
        "'0 with probability p_metal, else Normal(mean of the regressors, "
        "band_gap_std_eV^2)', clipped at 0: the estimate with the least expected absolute "
        "error; it is the regressors' mean where p_metal = 0 and moves towards 0 as p_metal "
        "grows (with one regressor: the mean clipped at 0). "
        "`band_gap_std_eV` is the standard deviation (ddof=0) of the regressors times the "
        "calibration factor below; it does not include the classifier's uncertainty. "
        + _regressor_data(card)), "",
        "## Calibration of band_gap_std_eV", "",
        *_calibration_lines(card.get("calibration")),
    ]


def _other_output_lines(bundle_dir: Path, card: dict[str, Any]) -> list[str]:
    """The output columns of the ``others`` members (targets read from their metadata)."""
    from fastgap.checkpoint import read_metadata

    names = card["members"].get("others", [])
    if not names:
        return []
    targets: dict[str, list[str]] = {}
    for name in names:
        for target in read_metadata(bundle_dir / name).get("targets", []):
            targets.setdefault(target, []).append(name)
    return ["## Outputs", "",
            *[f"- `{t}`: mean of {', '.join(m)}" for t, m in targets.items()], ""]


def _regressor_data(card: dict[str, Any]) -> str:
    """Whether the card's band-gap regressors saw metals (from its ``filters``)."""
    if "band_gap_eV > 0" in str(card.get("filters", {}).get("band_gap", "")):
        return "The regressors never saw metals."
    return "The regressors were trained on metals (gap 0) too."


def _domain_lines(card: dict[str, Any]) -> list[str]:
    """The elements and periodicity kinds the members were trained on (`fastgap.domain`),
    where the card records them."""
    from fastgap.structures import ELEMENTS

    provenance = card.get("provenance", {}).values()
    lines = []
    elements = [info.get(ELEMENTS_KEY) for info in provenance]
    if elements and all(elements):
        shared = sorted(set.intersection(*map(set, elements)))
        lines.append(f"- elements: {', '.join(ELEMENTS[z - 1] for z in shared)} (those of "
                     "the training structures); `fastgap predict` rejects inputs with another "
                     "element")
    counts = [info.get(PERIODICITY_KEY) for info in provenance]
    kinds = shared_kinds(counts)
    if kinds is None:
        return lines
    return [*lines, (f"- structures: {', '.join(k for k in KINDS if k in kinds) or 'none'} "
            f"(training structures per member: {describe(counts)}); `fastgap predict` "
            "rejects other kinds with the reason unless `--any-periodicity`")]


def _calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    if not calibration:
        return ["None: `band_gap_std_eV` is the raw ensemble spread (factor 1.0).", ""]
    return [
        (f"`band_gap_std_eV` = raw ensemble std x {calibration['std_scale']:.4g} "
        f"({calibration.get('method', '?')}, fitted on the {calibration.get('split', '?')} "
        "split). Fewer members (`--members`) report the raw spread."), "",
        "```json", json.dumps(calibration, indent=2), "```", "",
    ]
