"""Safe model checkpoints: safetensors weights + JSON metadata in the same file.

The metadata (safetensors header, key ``"fastgap"``) holds the format version, the fastgap
and torch versions, the ``ModelConfig``, the target names, kinds and normaliser, the
featurizer config of the store the model was trained on and the training config. Nothing
is unpickled: weights load through safetensors and the training state for resume through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fastgap._version import __version__
from fastgap.model import FastGapModel, ModelConfig

FORMAT_VERSION = 1
META_KEY = "fastgap"


def save_model(
    model: FastGapModel,
    path: str | Path,
    *,
    targets: list[str],
    featurizer: dict[str, Any],
    train_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (weights + buffers) and its metadata to ``path`` (.safetensors)."""
    from safetensors.torch import save_file

    core = getattr(model, "module", model)
    core = getattr(core, "_orig_mod", core)
    meta = {
        "format_version": FORMAT_VERSION,
        "fastgap_version": __version__,
        "torch_version": torch.__version__,
        "model_config": core.config.to_dict(),
        "targets": list(targets),
        "normaliser": {
            "mean": core.target_mean.tolist(),
            "std": core.target_std.tolist(),
            "is_class": core.target_is_class.tolist(),
        },
        "featurizer": dict(featurizer),
        "train_config": train_config or {},
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    tmp.replace(path)  # atomic: a crash never leaves a half-written best checkpoint
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata; clear errors for missing, corrupt or foreign files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"checkpoint: {str(path)!r} is not a readable safetensors file ({exc})")
    if META_KEY not in header:
        raise ValueError(f"checkpoint: {str(path)!r} has no fastgap metadata")
    meta = json.loads(header[META_KEY])
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint: format version {found} (written by fastgap "
            f"{meta.get('fastgap_version')}) is not supported; this fastgap {__version__} "
            f"reads format version {FORMAT_VERSION}"
        )
    return meta


def check_featurizer(meta: dict[str, Any], featurizer: dict[str, Any]) -> None:
    """Raise if the data's featurizer config (k) differs from the checkpoint's."""
    want, got = meta.get("featurizer", {}).get("k"), featurizer.get("k")
    if want != got:
        raise ValueError(
            f"featurizer: the checkpoint was trained with k={want} neighbours, "
            f"the data has k={got}"
        )


def load_model(
    path: str | Path, *, featurizer: dict[str, Any] | None = None, device: str = "cpu"
) -> tuple[FastGapModel, dict[str, Any]]:
    """Rebuild the model alone from ``path``; check ``featurizer`` against it if given."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if featurizer is not None:
        check_featurizer(meta, featurizer)
    model = FastGapModel(ModelConfig.from_dict(meta["model_config"]))
    state = load_file(str(path), device=device)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return model, meta


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write the resume state (optimizer, scheduler, counters: plain tensors and dicts)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a resume state written by ``save_state`` without unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no training state at {str(path)!r}")
    return torch.load(path, weights_only=True, map_location="cpu")
