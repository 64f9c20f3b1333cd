"""The options and the summary of a screening run (`fastgap.screening`).

`PredictConfig` is what the ``fastgap predict`` flags map onto and what a resumed run
compares (`PredictConfig.output_settings`); `PredictSummary` is the count a run returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgap.prediction_workers import START_METHODS


@dataclass
class PredictConfig:
    """Options of `predict_to_file` / `predict`; CLI flags map onto these fields.

    Attributes:
        model: "default" (the bundled ensemble), "fast" (the bundled one-network model),
            "qm9" (the bundled molecular orbital-energy model), a bundle or run directory, or
            a checkpoint.
        workers: parse + featurize worker processes (0 = in the calling process).
        batch_size: structures per model forward pass.
        chunk_size: inputs per worker task (and per inference chunk).
        tta: average each order-dependent model (LSTM pooling) over the distinct axis-swap
            atom orders of a structure; order-free models ("attention"/"mean" pooling) give
            the same numbers for every order and read only one (`fastgap.inference`).
        precision: "fp32" (the model card's numbers), "bf16" (CPU autocast; faster only on
            CPUs with native bfloat16), "int8" (dynamic quantization) or "auto" (bf16 where
            native, else fp32; resolved when the config is made), see `fastgap.inference`;
            accuracy changes in benchmarks/RESULTS.md.
        members: use only the first ``members`` band-gap regressors and as many classifiers
            (0 = all); 1 is the fast mode (no ``band_gap_std_eV``); fewer regressors than
            all report an uncalibrated std.
        calibrated: scale ``band_gap_std_eV`` by the card's calibration factor (False = the
            raw ensemble spread).
        backend: neighbour-list backend of the featurizer ("auto", "cpp", "numba", ...).
        threads: torch threads for inference (0 = leave torch's setting).
        start_method: how worker processes start: "fork" (Linux; milliseconds, the parent
            has already imported torch and loaded the bundle), "spawn" (a fresh interpreter
            per worker: about 1.5-3 s of imports) or "auto" (fork where the platform offers
            it, else spawn). The workers are started before any input is opened.
        policy: `fastgap.readers.ReadPolicy` (None = its defaults).
        any_periodicity: also predict structures of a periodicity kind (periodic, partial,
            molecule; `fastgap.domain`) that no member was trained on; by default they are
            rejected with that reason (the default bundle knows 3D-periodic crystals only).
        progress: show a progress bar.
        resume: continue a run that stopped (`predict_to_file` only, CSV output): keep the
            rows of ``<out>.partial`` and the rejects CSV, and predict only the inputs
            that are in neither (see `predict_to_file`).
    """

    model: Any = "default"
    workers: int = 2
    batch_size: int = 256
    chunk_size: int = 1000
    tta: bool = True
    precision: str = "fp32"
    members: int = 0
    calibrated: bool = True
    backend: str = "auto"
    threads: int = 0
    start_method: str = "auto"
    policy: Any = None
    any_periodicity: bool = False
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        from fastgap.inference import resolve_precision

        for name, low in (("workers", 0), ("batch_size", 1), ("chunk_size", 1), ("threads", 0),
                          ("members", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        self.precision = resolve_precision(self.precision)  # a resumed run keeps the concrete one
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method: expected one of {START_METHODS}, "
                             f"got {self.start_method!r}")

    def inference_options(self) -> dict[str, Any]:
        """Keyword arguments of `predict_featurized` / `predict_chunk`."""
        return {"tta": self.tta, "batch_size": self.batch_size, "precision": self.precision,
                "calibrated": self.calibrated, "check_periodicity": not self.any_periodicity}

    def output_settings(self) -> dict[str, Any]:
        """The settings that change the numbers of a row (a resumed run must keep them)."""
        policy = self.policy
        return {**self.inference_options(), "members": self.members, "backend": self.backend,
                "policy": None if policy is None else repr(policy)}


@dataclass
class PredictSummary:
    """Counts of one run: ``predicted + rejected + skipped == inputs`` (``skipped``: inputs
    a resumed run found already predicted or rejected)."""

    inputs: int = 0
    predicted: int = 0
    rejected: int = 0
    skipped: int = 0
    seconds: float = 0.0
    out: str = ""
    rejects: str = ""

    def __str__(self) -> str:
        done = self.inputs - self.skipped  # skipped inputs are only read again
        rate = done / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"inputs {self.inputs}: predicted {self.predicted}, rejected {self.rejected}"
            + (f", skipped (already done) {self.skipped}" if self.skipped else "")
            + f" ({self.seconds:.1f} s, {rate:.0f} structures/s)\n"
            f"predictions {self.out}\nrejects {self.rejects}"
        )
