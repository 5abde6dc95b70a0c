"""Run output conventions shared by every command.

A run folder holds `metrics.jsonl` (one JSON object per round, appended and flushed as it happens so that a crash
loses at most the round in progress), `summary.json` (final values plus the resolved config, written atomically) and
any command-specific files. `atomic_write_*` write to a temporary file in the same folder, fsync, then rename, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
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


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON (sorted keys) that understands tensors and numpy scalars."""
    return json.dumps(obj, default=_json_default, sort_keys=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    atomic_write_bytes(path, (json.dumps(obj, default=_json_default, sort_keys=True, indent=2) + "\n").encode())


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
