"""The `fedge` command: one subcommand per capability, each in `fedge.commands.<name>`.

Each command module exposes `add_arguments(parser)` and `main(args) -> int`. A user's mistake (bad config value,
missing data files) raises `ConfigError` or its subclass `fedge.errors.DataError`; it is printed as one line and
the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fedge.config import ConfigError

# name -> (module under fedge.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "train decentralized/personalized FL (DPMN and baselines)"),
    "recsys": ("recsys", "federated recommendation on MovieLens"),
    "cache": ("cache", "recommendation-enabled edge caching"),
    "reproduce": ("reproduce", "rerun the paper's experiments and write a report"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedge", description="Federated learning at the edge.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"fedge.commands.{module_name}")
        modules[name] = module
        sub = subparsers.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].main(args) or 0)
    except ConfigError as err:
        print(f"fedge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
