"""Subcommands of the `fedge` CLI; each module exposes `add_arguments(parser)` and `main(args) -> int`."""
