"""fastgap: band gaps and other properties of crystals and molecules from structure alone.

The public names below are imported lazily so that ``import fastgap`` stays cheap (no torch,
no numba compilation) until a name is used. Stage modules keep their own names (``fastgap.featurize``,
``fastgap.train``); their entry functions are ``fastgap.featurize.featurize`` and
``fastgap.train.train``.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastgap._version import __version__

_EXPORTS: dict[str, str] = {
    "neighbor_lists": "fastgap.neighbors",
    "neighbor_lists_batch": "fastgap.neighbors",
    "NeighborList": "fastgap.neighbors",
    "Structure": "fastgap.structures",
    "read_structures": "fastgap.readers",
    "FeaturizerConfig": "fastgap.features",
    "Store": "fastgap.store",
    "TrainConfig": "fastgap.train",
    "predict": "fastgap.screening",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastgap' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
