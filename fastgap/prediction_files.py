"""Output files of `fastgap predict`: the rows writer and the state that lets a stopped run
resume (``preds.csv.partial`` + ``preds.csv.partial.json``; `fastgap.screening.predict_to_file`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastgap.digest import file_sha256

if TYPE_CHECKING:
    from typing_extensions import Self

    from fastgap.ensemble import Bundle
    from fastgap.predict_config import PredictConfig


def _csv_fields(frame: Any) -> list[list[Any]]:
    """Each column of ``frame`` as a list of CSV fields, as pandas' ``to_csv`` writes them
    (floats in their shortest exact form, ``repr``; NaN empty), in about two thirds of
    its time."""
    fields = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind == "f":
            fields.append(["" if math.isnan(x) else repr(x) for x in values.tolist()])
        else:
            fields.append(values.tolist())
    return fields


def check_out_path(path: Path) -> None:
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"out: expected a .csv or .parquet path, got {str(path)!r}")


class RowWriter:
    """Append DataFrame chunks to CSV or Parquet (by suffix); the file appears on success.

    Rows go to ``<path>.partial`` first; ``append=True`` continues an existing partial CSV
    file, whose header the caller (`predict_to_file`, which refuses Parquet) has checked.
    """

    def __init__(self, path: Path, columns: list[str], append: bool = False) -> None:
        check_out_path(path)
        self.path, self.columns = path, columns
        self.partial = partial_path(path)
        self._parquet = path.suffix.lower() == ".parquet"
        self._append = append
        self._writer: Any = None
        self._rows = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._parquet:
            self._writer = self.partial.open("a" if self._append else "w", newline="",
                                             encoding="utf-8")
            if not self._append:
                self._writer.write(",".join(self.columns) + "\n")
        return self

    def write(self, frame: Any) -> None:
        frame = frame[self.columns]
        if not self._parquet:
            csv.writer(self._writer, lineterminator="\n").writerows(zip(*_csv_fields(frame)))
            self._writer.flush()  # whole chunks reach the file: what a resumed run reads
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.partial, table.schema)
        if len(frame) or self._rows == 0:
            self._writer.write_table(table)
        self._rows += len(frame)

    def tell(self) -> int:
        """Bytes of the CSV written so far (every row flushed)."""
        return self._writer.tell()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None and self._parquet and self._writer is None:
            import pandas as pd

            empty = {c: pd.Series(dtype=object if c == "id" else float) for c in self.columns}
            self.write(pd.DataFrame(empty))
        if self._writer is not None:
            self._writer.close()
        if exc_type is None and self._writer is not None:
            self.partial.replace(self.path)


def partial_path(out: Path) -> Path:
    """Where rows are written until the run completes: ``preds.csv.partial``."""
    return out.with_name(out.name + ".partial")


def run_state_path(out: Path) -> Path:
    """The model, settings and progress of an unfinished run: ``preds.csv.partial.json``."""
    return out.with_name(out.name + ".partial.json")


def run_identity(bundle: Bundle, config: PredictConfig, columns: list[str],
                 items: list[Any]) -> dict[str, Any]:
    """What a resumed run must share with the first: fastgap version, member files
    (sha256), the settings that change the numbers, the chunking and the inputs."""
    import hashlib

    from fastgap._version import __version__

    members = [{"file": m.path.name, "sha256": file_sha256(m.path)}
               for m in bundle.members]
    inputs = hashlib.sha256("\n".join(str(i) for i in items).encode()).hexdigest()
    return {"fastgap_version": __version__, "model": str(bundle.source), "members": members,
            "settings": config.output_settings(), "columns": columns,
            "chunk_size": config.chunk_size, "inputs_sha256": inputs}


@dataclass
class Progress:
    """Committed part of a run: whole chunks, and the file sizes right after them."""

    chunks: int = 0
    rows_bytes: int = 0
    rejects_bytes: int = 0
    inputs: int = 0


def save_progress(out: Path, identity: dict[str, Any], progress: Progress) -> None:
    """Write the run state atomically (a kill leaves the previous state or this one)."""
    path = run_state_path(out)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run": identity, "progress": vars(progress)}, indent=1) + "\n")
    os.replace(tmp, path)


def resume_progress(out: Path, rejects_path: Path, identity: dict[str, Any]) -> Progress | None:
    """The committed progress of the unfinished run at ``out`` (None: nothing to resume, a
    fresh run), after checking it ran with the same model, settings and inputs. The rows
    and rejects files are cut back to the last committed chunk."""
    partial, state_path = partial_path(out), run_state_path(out)
    if not partial.exists():
        if out.exists():
            raise ValueError(f"resume: {out} is complete, nothing to resume (remove it, or "
                             f"drop --resume, to predict again)")
        return None
    if not state_path.exists():
        raise ValueError(f"resume: {state_path} is missing, so the model and settings that "
                         f"wrote {partial} are unknown; drop --resume to start again")
    state = json.loads(state_path.read_text())
    saved = state["run"]
    diff = [k for k in identity if saved.get(k) != identity[k]]
    if diff:
        detail = "; ".join(f"{k}: {saved.get(k)!r} then, {identity[k]!r} now" for k in diff)
        raise ValueError(f"resume: {partial} was written with other {', '.join(diff)} "
                         f"({detail}); resume with the same model, options and inputs or "
                         f"drop --resume")
    progress = Progress(**state["progress"])
    for path, size in ((partial, progress.rows_bytes), (rejects_path, progress.rejects_bytes)):
        have = path.stat().st_size if path.exists() else -1
        if have < size:
            raise ValueError(f"resume: {path} holds {max(have, 0)} bytes, fewer than the "
                             f"{size} the first run committed; drop --resume to start again")
        if have > size:
            os.truncate(path, size)  # rows of a chunk that was not committed are redone
    return progress


def default_rejects_path(out: str | Path) -> Path:
    """``preds.csv`` -> ``preds.rejects.csv`` (next to the output)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(out.suffix) + ".rejects.csv")
