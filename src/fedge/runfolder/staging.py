"""Where a run writes, and when its results become visible: run folders are transactional.

The same rules for `fedge run`, `fedge recsys` and `fedge cache` (`--out`):

* **A fresh folder** (absent or empty): the run writes straight into it. metrics.jsonl grows round by round,
  checkpoints appear when asked for, summary.json (`fedge run`: each algorithm's, then comparison.json) comes last.
  An interrupted fresh run leaves an unfinished folder (no summary), which `--resume` continues if it has a
  checkpoint.
* **A folder that already holds a run**, finished or not: the new run writes into a hidden attempt folder beside
  it, `.NAME.attempt-PID-XXXXXX`, which replaces the old folder in one atomic step (Linux `renameat2` with
  `RENAME_EXCHANGE`; elsewhere two renames) only once the run has ended. Until then the old run stays exactly as it
  was: a rerun that is interrupted or fails with an error leaves it intact (Ctrl-C and errors remove the attempt
  folder; after a SIGKILL the next run into the same folder removes it), and cannot be resumed: a run that may
  need `--resume` starts in a fresh folder. A folder holding anything but a fedge
  run's files (`fedge.runfolder.RUN_FILES`, one level of algorithm subfolders) is refused, so nothing else is
  replaced by accident.
* **`--resume DIR`** continues the run in DIR in place (its checkpoint must have made its newest results:
  `fedge.runfolder.checkfile.verify_results`).
* **Divergence** ends a run as a finished, failed one: FAILED (the one-line message) instead of summary.json,
  published like a finished run.

Output problems (an `--out` that is a file, a folder that cannot be created or written, no room beside it for a
rerun) are `ConfigError`s raised when the attempt opens, which every command does before it loads any data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fedge.config import ConfigError
from fedge.output import atomic_write_bytes, remove_temporaries
from fedge.runfolder import FAILED, RUN_FILES, Diverged

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass
class Attempt:
    """One run's place on disk: `path` is where it writes (the folder `out` itself, or a hidden sibling when `staged`
    until `publish`); `created` lists the folders it made (removed again if it ends without writing anything)."""

    out: Path
    path: Path
    key: str
    staged: bool
    created: list[Path] = field(default_factory=list)

    def publish(self) -> None:
        """Make the attempt the folder's content: a staged attempt replaces the old folder atomically."""
        if not self.staged:
            return
        with _no_interrupts():
            real = Path(os.path.realpath(self.out))
            if _exchange(self.path, real):
                old = self.path
            else:  # two renames; a crash in between leaves `old`, which the next run moves back (`_clean_stale`)
                old = self.path.with_name(self.path.name + ".old")
                os.rename(real, old)
                os.rename(self.path, real)
            _fsync_dir(real.parent)
            shutil.rmtree(old, ignore_errors=True)
        self.staged, self.path = False, self.out

    def abandon(self) -> None:
        """Undo an attempt that ends without a result: remove a staged attempt; keep what a direct one wrote (an
        unfinished run, resumable from its checkpoint) but remove the folders it created if they are still empty."""
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break

    def fail(self, message: str) -> None:
        """Record why the run stopped: FAILED holds the one-line message."""
        atomic_write_bytes(self.path / FAILED, (message + "\n").encode())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back (it arrives right after) while a few renames publish a run."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(real: Path) -> None:
    """Remove the attempt folders beside `real` whose process is gone (killed); move back an old run left by a
    crash between the two renames of a publish."""
    prefix = f".{real.name}.attempt-"
    try:
        siblings = [p for p in real.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for stale in siblings:
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if stale.name.endswith(".old") and not os.path.lexists(real):
            os.rename(stale, real)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _foreign(out: Path) -> str | None:
    """The first entry of `out` that is not a fedge run's file (None when it looks like a run folder)."""
    for entry in sorted(out.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            inner = next((e for e in sorted(entry.iterdir()) if e.name not in RUN_FILES
                          and not (e.name.startswith(".") and e.name.endswith(".tmp"))), None)
            if inner is not None:
                return f"{entry.name}/{inner.name}"
        elif entry.name not in RUN_FILES:
            return entry.name
    return None


def _probe(folder: Path, key: str) -> None:
    """ConfigError unless a file can be created in `folder`."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fedge-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise ConfigError(f"{key}: cannot write in {folder} ({err.strerror})") from None


def _make_folders(out: Path, key: str) -> list[Path]:
    """Create `out` and its missing parents; returns the folders created (ConfigError if it cannot)."""
    missing = []
    folder = out
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise ConfigError(f"{key}: cannot create {out}: {folder} is a file, not a folder")
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except OSError as err:
            for made in reversed(created):
                made.rmdir()
            raise ConfigError(f"{key}: cannot create {path} ({err.strerror})") from None
        created.append(path)
    return created


def check_output(out: str | Path, key: str = "out") -> list[Path]:
    """Make sure `out` is (or can become) a folder this process can write in; returns the folders created."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"{key}: {out} exists and is not a folder")
    created = _make_folders(out, key)
    try:
        _probe(out, key)
    except ConfigError:
        for made in reversed(created):
            made.rmdir()
        raise
    return created


def open_attempt(out: str | Path, key: str = "out", resume: bool = False) -> Attempt:
    """Where a run into `out` writes (see the module docstring). Raises a one-line ConfigError for an output
    problem; creates nothing it does not need."""
    out = Path(out)
    if resume:
        if not out.is_dir():
            raise ConfigError(f"--resume: {out} is not a folder")
        _probe(out, key)
        _clean_stale(Path(os.path.realpath(out)))
        remove_temporaries(out)
        return Attempt(out, out, key, staged=False)
    real = Path(os.path.realpath(out))
    _clean_stale(real)
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"{key}: {out} exists and is not a folder")
    if out.is_dir():
        try:
            holds_run = any(out.iterdir())
            foreign = _foreign(out) if holds_run else None
        except OSError as err:
            raise ConfigError(f"{key}: cannot read {out} ({err.strerror})") from None
        if holds_run:
            if foreign is not None:
                raise ConfigError(f"{key}: {out} holds {foreign}, which is not a fedge run's file; a run replaces "
                                  "the whole folder, so choose another one")
            staging = real.with_name(f".{real.name}.attempt-{os.getpid()}-{secrets.token_hex(3)}")
            try:
                staging.mkdir()
            except OSError as err:
                raise ConfigError(f"{key}: cannot write beside {out}, where a rerun waits until it completes "
                                  f"({err.strerror})") from None
            return Attempt(out, staging, key, staged=True, created=[staging])
    return Attempt(out, out, key, staged=False, created=check_output(out, key))


@contextlib.contextmanager
def attempt(out: str | Path, key: str = "out", resume: bool = False) -> Iterator[Attempt]:
    """Open an attempt on `out`, publish it when the block ends (also when the run diverged: FAILED is written
    first), abandon it on any other exception (Ctrl-C included)."""
    current = open_attempt(out, key, resume)
    try:
        yield current
    except Diverged as err:
        current.fail(str(err))
        current.publish()
        raise
    except BaseException:
        current.abandon()
        raise
    current.publish()


__all__ = ["Attempt", "attempt", "check_output", "open_attempt"]
