"""Strict dataclass configuration: YAML in, validated dataclasses out.

Every command (`fedge run`, `fedge recsys`, `fedge cache`, ...) describes its settings as a tree of dataclasses.
`build(cls, mapping)` turns a plain mapping (from YAML plus `--set key=value` overrides) into that tree and rejects
unknown keys and wrongly typed values with a `ConfigError` whose one-line message names the offending key.

Numbers follow one rule, enforced here and nowhere else: every `float` must be finite (YAML and `--set` accept
`.nan`, `.inf`, `nan`, `inf`, and `1e999` overflows to inf), and a number declared with a `Range`,
`Annotated[float, Range(0, 1, high_open=True)]`, must lie in it. The range is declared where the field is, so a new
setting states its documented range once and is checked by every command (tests enumerate the declarations).
A dataclass may define `validate(self) -> None` raising `ConfigError` for checks that involve several fields
(k_min <= k_max, fractions summing to 1) or choices that depend on other values.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A user's configuration mistake. The CLI prints its message on one line and exits with code 2."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The documented range of a numeric setting, declared with the field: `lr: Annotated[float, Range(0,
    low_open=True)]` means lr > 0; `Range(0, 1, high_open=True)` means [0, 1). `None` is an open end (no bound).

    `build` rejects a value outside it with a one-line `ConfigError` naming the key and the value, so `validate`
    methods keep only checks that involve several fields.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:  # nan is in no range
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        """The range as a requirement: '> 0', '>= 1', '<= 5' or 'in [0, 1)'."""
        if self.high is None:
            return "any number" if self.low is None else f"{'>' if self.low_open else '>='} {_bound(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_bound(self.high)}"
        return (f"in {'(' if self.low_open else '['}{_bound(self.low)}, {_bound(self.high)}"
                f"{')' if self.high_open else ']'}")


# The ranges most settings share, as ready-made field types (`lr: PositiveFloat = 0.1`).
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]
BelowOne = Annotated[float, Range(0, 1, high_open=True)]  # [0, 1): momenta, discounts, failure probabilities
Share = Annotated[float, Range(0, 1, low_open=True)]  # a fraction of something that cannot be empty: (0, 1]
Similarity = Annotated[float, Range(-1, 1)]  # a cosine-similarity threshold
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
Seed = Annotated[int, Range(-(2**63), 2**63 - 1)]  # random streams hash the seed as a signed 64-bit integer


def _bound(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` to type `tp` or raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *extras = get_args(tp)
        value = _coerce(value, base, key)
        for rng in extras:
            if isinstance(rng, Range) and value is not None and value not in rng:
                raise ConfigError(f"{key}: must be {rng}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # `X | None`: X's own message (a range, a type) says more than "not a valid X or None"
            return _coerce(value, options[0], key)
        for arg in options:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{n}]") for n, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():  # never true of nan or inf
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        given = value
        if isinstance(value, str):  # YAML 1.1 reads "1e-8" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number):  # nan, inf, -inf, and text such as 1e999 that overflows to inf
            raise ConfigError(f"{key}: must be a finite number, got {given if isinstance(given, str) else repr(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    return value


def build(cls: type[T], mapping: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from `mapping`, strictly: unknown keys and bad types are ConfigErrors."""
    mapping = dict(mapping or {})
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in mapping.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            msg = str(err)
            raise ConfigError(msg if msg.startswith(prefix) or not prefix else f"{prefix}{msg}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON/YAML-serialisable data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or unreadable file, text that is not UTF-8 or malformed YAML is a ConfigError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte 0x{err.object[err.start]:02x} at offset "
                          f"{err.start}); save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def merge_mappings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section (a nested mapping merges; anything else replaces), as deep
    copies: config layers (tuned defaults ← YAML ← flags) before `build`."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(mapping: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `mapping[a][b][c] = value` for `dotted_key` 'a.b.c', creating intermediate mappings."""
    parts = dotted_key.split(".")
    node = mapping
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted_key}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def apply_overrides(mapping: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `key=value` strings (value parsed as YAML, so `3`, `0.5`, `true`, `[1,2]` work)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        set_path(mapping, key, value)
    return mapping


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds; for use in `validate` methods."""
    if not condition:
        raise ConfigError(message)


__all__ = [
    "BelowOne",
    "ConfigError",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Range",
    "Seed",
    "Share",
    "Similarity",
    "apply_overrides",
    "build",
    "check",
    "load_yaml",
    "set_path",
    "to_dict",
]
