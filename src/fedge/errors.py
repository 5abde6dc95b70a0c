"""User-facing error types. The CLI prints these as one line and exits with code 2."""

from __future__ import annotations

from fedge.config import ConfigError


class DataError(ConfigError):
    """Missing, corrupt or malformed data files; the message names the file (and line) and what to do."""


__all__ = ["ConfigError", "DataError"]
