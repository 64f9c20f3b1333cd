"""Start a training run from a trained checkpoint (``TrainConfig.init_from``).

The architecture comes from the checkpoint. Every tensor is copied except the head's output
layer, whose rows are matched to the new targets by name: a target the checkpoint also
predicted, of the same kind (regression or class), keeps its row, re-expressed in the new
run's normaliser so that the starting predictions equal the checkpoint's; any other target
gets a freshly initialised row (seeded). The normaliser itself is always fitted anew on the
new training split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fastgap.checkpoint import check_featurizer, load_model, read_metadata
from fastgap.model import ModelConfig

if TYPE_CHECKING:
    from fastgap.model import FastGapModel
    from fastgap.train import TrainConfig

# fields that do not change any tensor's shape: a fine-tune may set them freely
FREE_FIELDS = ("dropout", "n_outputs")


PACKAGED = "pretrained"  # the name of the model shipped in fastgap/models/pretrained/


def packaged_path() -> Path:
    """The pretrained model shipped with the package (card: ``MODEL_CARD.md`` beside it)."""
    return Path(__file__).resolve().parents[1] / "models" / "pretrained" / "model.safetensors"


def checkpoint_path(init_from: str | Path) -> Path:
    """``"pretrained"`` (the shipped model), a ``.safetensors`` file as given, or a run
    directory's ``best.safetensors``."""
    if str(init_from) == PACKAGED:
        path = packaged_path()
        if not path.is_file():
            raise FileNotFoundError(f"init_from: the packaged pretrained model is missing "
                                    f"({str(path)!r}); reinstall fastgap")
        return path
    path = Path(init_from)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"init_from: no checkpoint at {str(path)!r}")
    return path


def resolve_model_config(config: TrainConfig, meta: dict[str, Any]) -> TrainConfig:
    """``config`` with the checkpoint's architecture; a conflicting ``[model]`` is an error.

    A field of ``config.model`` left at its default takes the checkpoint's value; a field set
    to something else must equal the checkpoint's, except ``dropout``.
    """
    default, mine = ModelConfig().to_dict(), config.model.to_dict()
    theirs = dict(meta["model_config"])
    clash = sorted(k for k, v in mine.items()
                   if k not in FREE_FIELDS and v != default[k] and v != theirs.get(k))
    if clash:
        detail = ", ".join(f"{k}: {mine[k]!r} vs {theirs.get(k)!r}" for k in clash)
        raise ValueError(f"init_from: the model config differs from the checkpoint's ({detail}); "
                         "drop these fields to use the checkpoint's architecture")
    if mine["dropout"] != default["dropout"]:
        theirs["dropout"] = mine["dropout"]
    theirs["n_outputs"] = len(config.targets)
    return replace(config, model=ModelConfig.from_dict(theirs))


def resolve_init(config: TrainConfig, featurizer: dict[str, Any]) -> tuple[TrainConfig, Path, dict]:
    """(config with the architecture of ``config.init_from``, its checkpoint path, metadata);
    reads the metadata only, not the weights."""
    path = checkpoint_path(config.init_from)
    meta = read_metadata(path)
    check_featurizer(meta, featurizer)
    return resolve_model_config(config, meta), path, meta


def load_init(config: TrainConfig, featurizer: dict[str, Any]) -> tuple[TrainConfig, Path, Any, dict]:
    """`resolve_init` plus the source model: (config, checkpoint path, model, metadata)."""
    config, path, _ = resolve_init(config, featurizer)
    source, meta = load_model(path)
    return config, path, source, meta


@torch.no_grad()
def initialise(model: FastGapModel, source: FastGapModel, source_targets: list[str],
               targets: list[str]) -> dict[str, list[str]]:
    """Copy ``source``'s weights into ``model`` (normaliser already fitted); see module doc.

    Returns ``{"kept": [...], "fresh": [...]}``: the targets whose output row was carried over
    and those initialised anew.
    """
    skip = ("target_", f"head.{len(model.head) - 1}.")  # normaliser, output layer
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(skip)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith(skip)]
    if left or unexpected:  # resolve_model_config makes this unreachable for valid inputs
        raise ValueError(f"init_from: tensors do not match (missing {left}, unexpected {unexpected})")
    new_out, old_out = model.head[-1], source.head[-1]
    report: dict[str, list[str]] = {"kept": [], "fresh": []}
    for j, name in enumerate(targets):
        i = source_targets.index(name) if name in source_targets else -1
        if i < 0 or bool(source.target_is_class[i]) != bool(model.target_is_class[j]):
            report["fresh"].append(name)
            continue
        # new_norm = (old_mean + old_std * old_norm - new_mean) / new_std, written into the row
        ratio = float(source.target_std[i] / model.target_std[j])
        shift = float((source.target_mean[i] - model.target_mean[j]) / model.target_std[j])
        new_out.weight[j] = old_out.weight[i] * ratio
        new_out.bias[j] = old_out.bias[i] * ratio + shift
        report["kept"].append(name)
    return report
