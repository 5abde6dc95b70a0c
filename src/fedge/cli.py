"""The `fedge` command: one subcommand per capability, each in `fedge.commands.<name>`.

Each command module exposes `add_arguments(parser)` and `main(args) -> int`. A user's mistake (bad config value,
missing data files, an output folder that cannot be written, a model that diverged) raises `ConfigError` or a
subclass (`fedge.errors.DataError`, `fedge.runfolder.Diverged`); it is printed as one line and the exit code is 2.

Ctrl-C at any moment — while the command modules import (torch takes seconds), while a run trains, while it
writes — ends with the one line `fedge <command>: interrupted` and exit code 130. That is why this module imports
nothing from fedge at import time: everything that can take long happens inside `main`'s handler.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

# name -> (module under fedge.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "train decentralized/personalized FL (DPMN and baselines)"),
    "recsys": ("recsys", "federated recommendation on MovieLens"),
    "cache": ("cache", "recommendation-enabled edge caching"),
    "reproduce": ("reproduce", "rerun the paper's experiments and write a report"),
    "privacy-sweep": ("privacy_sweep", "accuracy against the privacy budget ε over seeds: a table and a plot"),
    "launch": ("launch", "start `fedge run` over several processes or machines (torchrun)"),
}
INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command ended by Ctrl-C


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(prog="fedge", description="Federated learning at the edge.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"fedge.commands.{module_name}")
        modules[name] = module
        sub = subparsers.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(sub)
    return parser, modules


@contextmanager
def _ctrl_c_after_imports() -> Iterator[None]:
    """Hold a Ctrl-C that arrives while the command modules (and torch's C extensions) import, and deliver it as
    KeyboardInterrupt once they are in: an interrupt raised inside an extension's initialisation can abort the
    interpreter (pybind11 terminates on it) instead of reaching the one-line handler in `main`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _run(argv: Sequence[str] | None) -> int:
    with _ctrl_c_after_imports():
        import torch  # noqa: F401  (the slow, fragile import, first and whole)

        from fedge.config import ConfigError

        parser, modules = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].main(args) or 0)
    except ConfigError as err:
        print(f"fedge {args.command}: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    name = _command_name(words)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        if argv is None:  # the process is ending: a second Ctrl-C must not turn this line into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"fedge {name}: interrupted" if name else "fedge: interrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        if argv is None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # nor a Ctrl-C while the interpreter shuts down


if __name__ == "__main__":
    sys.exit(main())
