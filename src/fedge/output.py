"""Run output conventions shared by every command.

A run folder holds `metrics.jsonl` (one JSON object per round, appended and flushed as it happens so that a crash
loses at most the round in progress), `summary.json` (final values plus the resolved config, written atomically) and
any command-specific files. `atomic_write_*` write to a temporary file in the same folder, fsync, then rename, so a
reader never sees half a file; the file ends with the permissions the user's umask gives a new file (as `open` would),
not the 0600 of `tempfile.mkstemp`.

All JSON written here is strict: `NaN`, `Infinity` and `-Infinity` are not JSON, so a non-finite number is an error
(`dumps` raises a `ValueError` naming where it is). Values that legitimately have no number (the 10th percentile of
an empty set) are written as `null` by whoever computes them; a loss that stopped being finite is a divergence
(`fedge.runfolder.Diverged`), caught before anything is written.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def non_finite(obj: Any, where: str = "") -> str | None:
    """The path (`a.b[2]`) of the first non-finite float in `obj` (nested dicts, lists, tensors), or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "value")
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = non_finite(value, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for k, value in enumerate(obj):
            found = non_finite(value, f"{where}[{k}]")
            if found:
                return found
    elif hasattr(obj, "item") or hasattr(obj, "tolist"):
        try:
            return non_finite(_json_default(obj), where)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def _strict(obj: Any, text: Any, **kwargs: Any) -> str:
    try:
        return json.dumps(obj, default=_json_default, sort_keys=True, allow_nan=False, **kwargs)
    except ValueError as err:
        where = non_finite(obj)
        if where is None:
            raise
        raise ValueError(f"{text}: {where} is not a finite number (strict JSON has no NaN or Infinity)") from err


def dumps(obj: Any) -> str:
    """Compact, deterministic, strict JSON (sorted keys; no NaN/Infinity) that understands tensors and numpy
    scalars."""
    return _strict(obj, "JSON record")


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename. The file gets the
    permissions a file created with `open` would (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented strict JSON (no NaN/Infinity), written atomically."""
    atomic_write_bytes(path, (_strict(obj, str(path), indent=2) + "\n").encode())


def remove_temporaries(folder: str | Path) -> None:
    """Temp files an atomic write left when its process was killed mid-write (`.NAME.*.tmp`), in `folder` and its
    subfolders; never a finished file."""
    root = Path(folder)
    if root.is_dir():
        for stale in [*root.glob(".*.tmp"), *root.glob("*/.*.tmp")]:
            stale.unlink(missing_ok=True)


class JsonlWriter:
    """Append-only JSON-lines file; each record is flushed and fsynced before `write` returns."""

    def __init__(self, path: str | Path, truncate: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "w" if truncate else "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, ignoring a torn last line left by a crash."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Any]:
    """A Rich progress bar on stderr; yields a callable `advance(n=1, **fields)`."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            progress.update(task, advance=n, status=status)

        yield advance


def print_table(title: str, columns: list[str], rows: Iterable[list[Any]]) -> None:
    """Print a Rich table to stdout."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column not in (columns[0],) else "left")
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
