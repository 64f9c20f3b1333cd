"""Walking inputs (files, directories, tar archives, in-memory objects) into `RawItem`s.

Nothing is parsed here beyond splitting JSON-lines files into lines: the items are cheap and
picklable so that parsing can run in worker processes.
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from fastgap.structures import Structure

_SUFFIX_FORMATS = {
    ".cif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".xyz": "xyz",
    ".extxyz": "xyz",
    ".jsonl": "jsonl",
}
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_POSCAR_NAMES = ("POSCAR", "CONTCAR")
#: Decompressed bytes read at a time from JSON-lines files; lines per block when splitting.
READ_BYTES = 1 << 22
LINE_BLOCK = 4096


@dataclass(frozen=True)
class RawItem:
    """One unparsed input: a file's bytes, a JSON-lines line or an in-memory object.

    Attributes:
        id: the structure id, or None when it lives inside the payload (a JSON-lines line).
        source: where it came from: a path, ``archive.tar.gz:member``, ``file.jsonl.gz:line 17``
            or ``<input 3>`` for an object.
        format: "jsonl", "cif", "poscar", "xyz", "object" or "unknown".
        payload: bytes (files, lines) or the object itself.
    """

    id: str | None
    source: str
    format: str
    payload: Any


def detect_format(name: str) -> str | None:
    """The format of a file name: jsonl(.gz), cif, poscar, xyz, tar, or None if unknown."""
    base = PurePosixPath(name).name
    lower = base.lower()
    if lower.endswith(".jsonl.gz"):
        return "jsonl"
    if lower.endswith(_ARCHIVE_SUFFIXES):
        return "tar"
    if base.startswith(_POSCAR_NAMES) and PurePosixPath(base).suffix.lower() not in _SUFFIX_FORMATS:
        return "poscar"
    return _SUFFIX_FORMATS.get(PurePosixPath(lower).suffix)


def file_id(name: str) -> str:
    """A file's structure id: its name without the extension.

    Files named ``POSCAR*``/``CONTCAR*`` with no known extension carry no name of their own, so
    their id is ``<parent dir>_<name>`` (``Si/POSCAR`` -> ``Si_POSCAR``; just ``POSCAR`` when
    there is no parent directory).
    """
    path = PurePosixPath(name.replace("\\", "/"))
    bare = path.name.startswith(_POSCAR_NAMES) and path.suffix.lower() not in _SUFFIX_FORMATS
    if bare:
        parent = path.parent.name
        return f"{parent}_{path.name}" if parent else path.name
    return path.stem


def iter_raw(inputs: Iterable[str | Path | Any]) -> Iterator[RawItem]:
    """Stream `RawItem`s from inputs in order.

    Inputs: paths to files (by extension/name, see `detect_format`), directories (walked
    recursively in sorted path order; hidden and unrecognised files are skipped), ``.tar``,
    ``.tar.gz``, ``.tgz`` archives (streamed member by member, never extracted), or objects:
    pymatgen ``Structure``/``Molecule``, ASE ``Atoms``, fastgap ``Structure``. An explicitly
    named file of unknown type becomes an item of format "unknown" (rejected on parsing).
    A path that does not exist, or a directory holding no file of a known format, is a
    ``FileNotFoundError``; any other type a ``TypeError``.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for index, obj in enumerate(inputs):
        if isinstance(obj, (str, Path)):
            yield from _iter_path(Path(obj), explicit=True)
        else:
            yield _object_item(obj, index)


def _readable(child: Path, top: Path) -> bool:
    """True for a file under ``top`` that a directory walk reads (known format, not hidden)."""
    rel = child.relative_to(top).parts
    return not any(part.startswith(".") for part in rel) and detect_format(child.name) is not None


def _no_structure_files(path: Path) -> FileNotFoundError:
    n_files = sum(1 for p in path.rglob("*") if p.is_file())
    read = [f"*{s}" for s in (*_SUFFIX_FORMATS, ".jsonl.gz", *_ARCHIVE_SUFFIXES)]
    read += [f"{name}*" for name in _POSCAR_NAMES]
    return FileNotFoundError(
        f"inputs: no structure files in directory {path} ({n_files} other files; read: "
        f"{', '.join(read)})"
    )


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"inputs: no such file or directory: {path}")


def check_paths(paths: Iterable[str | Path]) -> None:
    """Raise ``FileNotFoundError`` for a path that does not exist or a directory with no file
    a walk would read: what `iter_raw` would raise, before any output is created."""
    for path in map(Path, paths):
        if path.is_dir():
            if not any(c.is_file() and _readable(c, path) for c in path.rglob("*")):
                raise _no_structure_files(path)
        elif not path.is_file():
            raise _missing(path)


def _iter_path(path: Path, explicit: bool) -> Iterator[RawItem]:
    if path.is_dir():
        found = False
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            if _readable(child, path):
                found = True
                yield from _iter_path(child, explicit=False)
        if not found:  # most likely a wrong path: say so instead of reading nothing
            raise _no_structure_files(path)
        return
    if not path.is_file():
        raise _missing(path)
    fmt = detect_format(path.name)
    if fmt == "tar":
        yield from _iter_tar(path)
    elif fmt == "jsonl":
        with path.open("rb") as raw, _open_maybe_gz(path.name, raw) as fh:
            yield from _iter_lines(fh, str(path))
    else:
        yield RawItem(file_id(str(path)), str(path), fmt or "unknown", path.read_bytes())


def _open_maybe_gz(name: str, fh: IO[bytes]) -> IO[bytes]:
    return gzip.GzipFile(fileobj=fh) if name.lower().endswith(".gz") else fh


def _iter_lines(fh: IO[bytes], source: str) -> Iterator[RawItem]:
    for first, lines in iter_line_blocks(fh, LINE_BLOCK):
        for number, line in enumerate(lines, start=first):
            if line.strip():
                yield RawItem(None, f"{source}:line {number}", "jsonl", line)


def iter_line_blocks(fh: IO[bytes], max_lines: int) -> Iterator[tuple[int, list[bytes]]]:
    """(first line number, up to ``max_lines`` lines without their newline) of a byte stream.

    Reads large pieces and splits them in C: much cheaper per line than iterating ``fh``
    (gzip's ``readline`` is Python code). Line numbers start at 1 and count every line.
    """
    first, pending, tail = 1, [], b""
    while True:
        piece = fh.read(READ_BYTES)
        if not piece:
            break
        lines = (tail + piece).split(b"\n")
        tail = lines.pop()  # an unfinished line waits for the next piece
        pending.extend(lines)
        while len(pending) >= max_lines:
            yield first, pending[:max_lines]
            first, pending = first + max_lines, pending[max_lines:]
    if tail:
        pending.append(tail)
    if pending:
        yield first, pending


def iter_raw_chunks(inputs: Iterable[str | Path | Any], size: int) -> Iterator[list[RawItem]]:
    """`iter_raw` grouped into lists of about ``size`` records, for worker tasks.

    Lines of a JSON-lines file travel as "jsonl-block" items (payload ``(first line number,
    lines)``, source the file) instead of one item per line: one pickled object per block
    and no per-line work in the reading process. Other items are as `iter_raw` yields them.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size: expected an int >= 1, got {size!r}")
    chunk: list[RawItem] = []
    count = 0
    for item in _iter_blocks(inputs, size):
        chunk.append(item)
        count += len(item.payload[1]) if item.format == "jsonl-block" else 1
        if count >= size:
            yield chunk
            chunk, count = [], 0
    if chunk:
        yield chunk


def _iter_blocks(inputs: Iterable[str | Path | Any], size: int) -> Iterator[RawItem]:
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for index, obj in enumerate(inputs):
        path = Path(obj) if isinstance(obj, (str, Path)) else None
        if path is not None and path.is_file() and detect_format(path.name) == "jsonl":
            with path.open("rb") as raw, _open_maybe_gz(path.name, raw) as fh:
                for first, lines in iter_line_blocks(fh, size):
                    yield RawItem(None, str(path), "jsonl-block", (first, lines))
        elif path is not None:
            yield from _iter_path(path, explicit=True)
        else:
            yield _object_item(obj, index)


def _iter_tar(path: Path) -> Iterator[RawItem]:
    # "r|*" streams: members are read in archive order and nothing is written to disk
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            name = member.name
            parts = PurePosixPath(name).parts
            fmt = detect_format(name)
            if fmt in (None, "tar") or any(p.startswith(".") for p in parts):
                continue
            fh = archive.extractfile(member)
            if fh is None:
                continue
            source = f"{path}:{name}"
            if fmt == "jsonl":
                with _open_maybe_gz(name, fh) as lines:
                    yield from _iter_lines(lines, source)
            else:
                yield RawItem(file_id(name), source, fmt, fh.read())


def _object_item(obj: Any, index: int) -> RawItem:
    source = f"<input {index}>"
    module = type(obj).__module__
    if isinstance(obj, Structure):
        return RawItem(obj.id, obj.source or source, "object", obj)
    if module.startswith("pymatgen") and hasattr(obj, "sites"):
        rid = (getattr(obj, "properties", None) or {}).get("id")
    elif module.startswith("ase") and hasattr(obj, "positions"):
        rid = obj.info.get("id")
    else:
        raise TypeError(
            f"inputs[{index}]: expected a path, pymatgen Structure/Molecule, ASE Atoms or "
            f"fastgap Structure, got {type(obj).__name__}"
        )
    rid = rid if isinstance(rid, str) and rid else f"object-{index}"
    return RawItem(rid, source, "object", obj)
