"""One kind of registry for everything a user can name in a config: algorithms, recommendation algorithms, caching
agents, datasets and models.

A registry maps a name to a builder and a one-line description; `create(name, ...)` calls the builder, and an
unknown name is a `ConfigError` listing the choices (one line, exit 2 on the command line). Libraries register
their own entries with the `register` decorator (see docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from fedge.config import ConfigError

B = TypeVar("B", bound=Callable[..., object])


@dataclass(frozen=True)
class Entry(Generic[B]):
    name: str
    builder: B
    description: str


class Registry(Generic[B]):
    """Named builders of one kind (`kind` names it in error messages, e.g. "algorithm")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[B]] = {}

    def register(self, name: str, description: str = "") -> Callable[[B], B]:
        """Decorator: `@REGISTRY.register("name", "what it does")` over a builder."""
        def add(builder: B) -> B:
            self.add(name, builder, description)
            return builder
        return add

    def add(self, name: str, builder: B, description: str = "") -> None:
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} name {name!r} must be non-empty without surrounding spaces")
        if name in self._entries and self._entries[name].builder is not builder:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, builder, description)

    def get(self, name: str) -> Entry[B]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r} (choose from {', '.join(self._entries)})")
        return self._entries[name]

    def check(self, names: list[str], key: str) -> None:
        """ConfigError naming `key` unless every name is registered."""
        for name in names:
            if name not in self._entries:
                raise ConfigError(f"{key}: unknown {self.kind} {name!r} (choose from {', '.join(self._entries)})")

    def create(self, name: str, *args: object, **kwargs: object) -> object:
        return self.get(name).builder(*args, **kwargs)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["Entry", "Registry"]
