"""Acceptance (issue 18): every numeric setting of every command is finite and in its declared range, or the command
exits 2 with one line naming the key and the value, before any data is loaded.

The table is built from the config dataclasses themselves (`numeric_settings`), so a setting added later is covered
without touching this file, and a numeric setting that declares no `Range` fails
`test_every_numeric_setting_declares_a_range`. Each case goes through the real command line (`fedge.cli.main`) with
`--set KEY=VALUE` (for `fedge reproduce`'s own grid settings, its flags); the step after configuration (loading
data, running the grid) is replaced by a tripwire, so a value that slipped through fails the test instead of
starting a run.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest

from fedge.caching.config import CacheConfig
from fedge.cli import main
from fedge.config import ConfigError, Range, build, to_dict
from fedge.experiment import ExperimentConfig
from fedge.recsys.config import RecsysConfig
from fedge.reproduce.grid import GridSpec

NON_FINITE = ("nan", "inf", "-inf")  # as a user types them; YAML reads them as strings, `float` parses them


@dataclass(frozen=True)
class Setting:
    """One numeric setting: its key as error messages name it (`train.lr`, `latency.classes[0].fraction`), its
    number type and declared range, and how to give it a value on the command line (`overrides(value_text)` ->
    the `KEY=VALUE` text of one `--set`)."""

    key: str
    kind: type
    range: Range | None
    overrides: Callable[[str], str]


def _unwrap(tp: Any) -> tuple[Any, Range | None]:
    """(base type, declared range) of a field type, through `X | None` and `Annotated[X, Range(...)]`."""
    if get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            tp = options[0]
    if get_origin(tp) is Annotated:
        base, *extras = get_args(tp)
        return base, next((e for e in extras if isinstance(e, Range)), None)
    return tp, None


def _valid_example(kind: type, rng: Range | None) -> int | float:
    """A value inside `rng` (used to fill the required fields of a list item around the one under test)."""
    if rng is None:
        return kind(1)
    if rng.high is not None and not rng.high_open:
        return kind(rng.high)
    if rng.low is not None and not rng.low_open:
        return kind(rng.low)
    if rng.low is not None and rng.high is not None:
        return kind((rng.low + rng.high) / 2)
    return kind(rng.low + 1) if rng.low is not None else kind(rng.high - 1)


def _item_template(cls: type) -> dict[str, Any]:
    """Valid values for the required numeric fields of a list-item dataclass (e.g. `fraction` of a link class)."""
    hints = get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            base, rng = _unwrap(hints[f.name])
            out[f.name] = _valid_example(base, rng)
    return out


def _flow(mapping: dict[str, Any], name: str, text: str) -> str:
    """A YAML flow mapping of `mapping` with `name` set to the raw text `text`."""
    items = {**{k: repr(v) for k, v in mapping.items()}, name: text}
    return "{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}"


def numeric_settings(cls: type, prefix: str = "") -> Iterator[Setting]:
    """Every int/float setting of the dataclass tree `cls`, including numbers in lists (`hierarchy.assignment`)
    and the numeric fields of list-of-dataclass settings (`latency.classes`, `bandwidth_classes`)."""
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        base, rng = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(base):
            yield from numeric_settings(base, f"{key}.")
        elif base in (int, float):
            yield Setting(key, base, rng, lambda text, key=key: f"{key}={text}")
        elif get_origin(base) is list:
            item, item_range = _unwrap(get_args(base)[0])
            if item in (int, float):
                yield Setting(f"{key}[0]", item, item_range, lambda text, key=key: f"{key}=[{text}]")
            elif dataclasses.is_dataclass(item):
                template = _item_template(item)
                for sub in numeric_settings(item):
                    yield Setting(f"{key}[0].{sub.key}", sub.kind, sub.range,
                                  lambda text, key=key, name=sub.key, template=template:
                                  f"{key}=[{_flow(template, name, text)}]")


def bad_values(setting: Setting) -> list[str]:
    """nan, inf, -inf, and a value just outside each finite end of the declared range, as command-line text."""
    values = list(NON_FINITE)
    rng = setting.range
    if rng is not None:
        if rng.low is not None:
            below = rng.low - 1 if setting.kind is int else (rng.low if rng.low_open else rng.low - 1)
            values.append(repr(setting.kind(below)))
        if rng.high is not None:
            above = rng.high + 1 if setting.kind is int else (rng.high if rng.high_open else rng.high + 1)
            values.append(repr(setting.kind(above)))
    return values


class ConfigAccepted(AssertionError):
    """Raised by the tripwire: the command got past its configuration with a bad value."""


def _tripwire(*_args: Any, **_kwargs: Any) -> Any:
    raise ConfigAccepted("the bad value was accepted: the command went on to load data / run")


# command -> (root config, extra arguments); `fedge reproduce --set` sets the base experiment config
COMMANDS = {"run": ExperimentConfig, "recsys": RecsysConfig, "cache": CacheConfig, "reproduce": ExperimentConfig}
# fedge reproduce's own grid settings come from flags, not --set
GRID_FLAGS = {"seeds": "--seeds", "rounds": "--rounds", "deltas[0]": "--deltas", "device_counts[0]": "--device-counts",
              "densities[0]": "--densities", "train_per_device[0]": "--train-per-device"}


def _cases() -> Iterator[Any]:
    for command, root in COMMANDS.items():
        for setting in numeric_settings(root):
            for text in bad_values(setting):
                yield pytest.param(command, ["--set", setting.overrides(text)], setting.key, text,
                                   id=f"{command}-{setting.key}={text}")
    for setting in numeric_settings(GridSpec):
        for text in bad_values(setting):
            if setting.kind is int and text in NON_FINITE:
                continue  # an int flag: argparse refuses the text itself (tested on `build` below)
            yield pytest.param("reproduce", [f"{GRID_FLAGS[setting.key]}={text}"], setting.key, text,
                               id=f"reproduce-{GRID_FLAGS[setting.key]}={text}")


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever each command does after its configuration is built raises `ConfigAccepted`."""
    import fedge.commands.cache
    import fedge.recsys.runner
    import fedge.reproduce.pool
    import fedge.runtimes.setup

    monkeypatch.setattr(fedge.runtimes.setup, "prepare", _tripwire)
    monkeypatch.setattr(fedge.recsys.runner, "run", _tripwire)
    monkeypatch.setattr(fedge.commands.cache, "run_cache", _tripwire)
    monkeypatch.setattr(fedge.reproduce.pool, "run_grid", _tripwire)


@pytest.mark.parametrize("command,args,key,text", list(_cases()))
def test_bad_number_is_one_line_naming_key_and_value(command: str, args: list[str], key: str, text: str,
                                                     tripwires: None, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main([command, "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith(f"fedge {command}: error: {key}: "), line
    assert f"got {text}" in line or f"got {text!r}" in line, line


def test_the_table_covers_every_command_and_nested_settings() -> None:
    keys = {command: {s.key for s in numeric_settings(root)} for command, root in COMMANDS.items()}
    assert {"train.lr", "regularizer.lam", "data.test_per_device", "latency.classes[0].fraction",
            "bandwidth_classes[0].k_max", "hierarchy.assignment[0]"} <= keys["run"]
    assert {"decentralized.delta", "train.lr", "meta.inner_lr", "model.layers[0]"} <= keys["recsys"]
    assert {"cost.w_miss", "soft_hits.floor", "soft_hits.midpoint", "agent.epsilon_decay_steps"} <= keys["cache"]
    assert {s.key for s in numeric_settings(GridSpec)} == set(GRID_FLAGS)
    assert sum(len(k) for k in keys.values()) > 150


@pytest.mark.parametrize("root", [ExperimentConfig, RecsysConfig, CacheConfig, GridSpec])
def test_every_numeric_setting_declares_a_range(root: type) -> None:
    missing = [s.key for s in numeric_settings(root) if s.range is None]
    assert not missing, f"declare a Range for {missing} (fedge.config.Range, with the field)"


@pytest.mark.parametrize("root", [ExperimentConfig, RecsysConfig, CacheConfig, GridSpec])
def test_defaults_are_in_range(root: type) -> None:
    built = build(root, to_dict(root()))
    assert to_dict(built) == to_dict(root())


@pytest.mark.parametrize("setting", list(numeric_settings(GridSpec)), ids=lambda s: s.key)
def test_grid_settings_refuse_non_finite_values_on_build(setting: Setting) -> None:
    name = setting.key.removesuffix("[0]")
    for text in NON_FINITE:
        value = float(text)
        with pytest.raises(ConfigError, match=rf"^{name}(\[0\])?: .*got {text}") as info:
            build(GridSpec, {name: [value] if setting.key.endswith("[0]") else value})
        assert len(str(info.value).splitlines()) == 1


def test_nested_list_settings_on_build() -> None:
    with pytest.raises(ConfigError, match=r"^latency\.classes\[1\]\.fraction: must be a finite number, got nan$"):
        build(ExperimentConfig, {"latency": {"classes": [{"fraction": 0.5}, {"fraction": math.nan}]}})
    with pytest.raises(ConfigError, match=r"^latency\.classes\[0\]\.downlink_mbps: must be > 0, got -1\.0$"):
        build(ExperimentConfig, {"latency": {"classes": [{"fraction": 1.0, "downlink_mbps": -1}]}})
    with pytest.raises(ConfigError, match=r"^bandwidth_classes\[0\]\.target_density: must be in \(0, 1\], got 1\.5$"):
        build(ExperimentConfig, {"bandwidth_classes": [{"fraction": 1.0, "target_density": 1.5, "k_max": 2}]})
    with pytest.raises(ConfigError, match=r"^bandwidth_classes\[0\]\.fraction: must be a finite number, got inf$"):
        build(ExperimentConfig, {"bandwidth_classes": [{"fraction": math.inf, "target_density": 0.5, "k_max": 2}]})
    # the cross-field rules stay: fractions must still sum to 1
    with pytest.raises(ConfigError, match="fractions sum to 0.5"):
        build(ExperimentConfig, {"latency": {"classes": [{"fraction": 0.5}]}})


# The defects of issue 18 (section 8), each accepted before: a run started with the value (NaN losses, `NaN` and
# `Infinity` tokens in metrics.jsonl / summary.json, soft hits silently off) or died with a traceback.
@pytest.mark.parametrize("command,setting,message", [
    ("run", "train.lr=inf", "train.lr: must be a finite number, got inf"),
    ("run", "regularizer.lam=inf", "regularizer.lam: must be a finite number, got inf"),
    ("run", "regularizer.lam=.inf", "regularizer.lam: must be a finite number, got inf"),
    ("cache", "cost.w_miss=inf", "cost.w_miss: must be a finite number, got inf"),
    ("cache", "soft_hits.floor=nan", "soft_hits.floor: must be a finite number, got nan"),
    ("cache", "soft_hits.max_prob=nan", "soft_hits.max_prob: must be a finite number, got nan"),
    ("cache", "soft_hits.exponent=nan", "soft_hits.exponent: must be a finite number, got nan"),
    ("cache", "soft_hits.steepness=nan", "soft_hits.steepness: must be a finite number, got nan"),
    ("cache", "soft_hits.midpoint=nan", "soft_hits.midpoint: must be a finite number, got nan"),
    ("cache", "soft_hits.midpoint=3", "soft_hits.midpoint: must be in [-1, 1], got 3.0"),
    ("recsys", "decentralized.delta=5", "decentralized.delta: must be in [-1, 1], got 5.0"),
    ("recsys", "meta.inner_lr=inf", "meta.inner_lr: must be a finite number, got inf"),
    ("recsys", "train.lr=1e999", "train.lr: must be a finite number, got 1e999"),
    ("run", "data.test_per_device=0", "data.test_per_device: must be >= 1, got 0"),
    ("run", "data.test_per_device=-5", "data.test_per_device: must be >= 1, got -5"),
    # the random streams pack the seed as a signed 64-bit integer: struct.error traceback before
    ("run", "seed=9223372036854775808", "seed: must be in [-9223372036854775808, 9223372036854775807], "
                                        "got 9223372036854775808"),
    ("cache", "seed=-9223372036854775809", "seed: must be in [-9223372036854775808, 9223372036854775807], "
                                           "got -9223372036854775809"),
    # the DQN's epsilon schedule divides by it: ZeroDivisionError before
    ("cache", "agent.epsilon_decay_steps=0", "agent.epsilon_decay_steps: must be >= 1, got 0"),
])
def test_issue_18_defects(command: str, setting: str, message: str, tripwires: None, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main([command, "--out", str(tmp_path / "out"), "--set", setting])
    assert (code, capsys.readouterr().err.strip().splitlines()) == (2, [f"fedge {command}: error: {message}"])
