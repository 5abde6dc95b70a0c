from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest

from fedge.cli import main
from fedge.config import ConfigError, PositiveInt, Range, apply_overrides, build, load_yaml


@dataclass
class _Example:
    rate: float = 0.1
    count: int = 1


def test_exponent_without_a_dot_is_a_number() -> None:
    # YAML 1.1 reads "1e-3" as a string; `--set train.adam_eps=1e-3` must still mean 0.001.
    built = build(_Example, apply_overrides({}, ["rate=1e-3"]))
    assert built.rate == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="rate: expected a number, got 'fast'"):
        build(_Example, {"rate": "fast"})
    with pytest.raises(ConfigError, match="unknown config key"):
        build(_Example, {"speed": 1})


@pytest.mark.parametrize("text,shown", [("nan", "nan"), (".nan", "nan"), ("NaN", "NaN"), ("inf", "inf"),
                                        (".inf", "inf"), ("-inf", "-inf"), ("-.inf", "-inf"), ("1e999", "1e999"),
                                        ("-1.0e+999", "-inf"), (str(10**400), "1" + "0" * 400)])
def test_every_float_must_be_finite(text: str, shown: str) -> None:
    # A float setting without a declared range is still refused non-finite, whichever way YAML or --set spells it.
    with pytest.raises(ConfigError, match=f"^rate: must be a finite number, got {shown}$"):
        build(_Example, apply_overrides({}, [f"rate={text}"]))


@pytest.mark.parametrize("text", ["nan", ".nan", "inf", "-.inf"])
def test_an_int_refuses_non_finite_values(text: str) -> None:
    with pytest.raises(ConfigError, match="^count: expected an integer, got "):
        build(_Example, apply_overrides({}, [f"count={text}"]))


@dataclass
class _Ranged:
    lr: Annotated[float, Range(0, low_open=True)] = 0.1
    momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    delta: Annotated[float, Range(-1, 1)] = 0.0
    cap: Annotated[float, Range(high=5)] = 1.0
    devices: Annotated[int, Range(2)] = 2
    per_device: PositiveInt | None = None
    widths: list[PositiveInt] = field(default_factory=list)
    inner: list[_Example] = field(default_factory=list)


@pytest.mark.parametrize("key,value,message", [
    ("lr", 0, "lr: must be > 0, got 0.0"),
    ("lr", -1e-9, "lr: must be > 0, got -1e-09"),
    ("momentum", 1, "momentum: must be in [0, 1), got 1.0"),
    ("momentum", -0.5, "momentum: must be in [0, 1), got -0.5"),
    ("delta", 1.5, "delta: must be in [-1, 1], got 1.5"),
    ("cap", 6, "cap: must be <= 5, got 6.0"),
    ("devices", 1, "devices: must be >= 2, got 1"),
    ("per_device", 0, "per_device: must be >= 1, got 0"),  # the range of X in `X | None`, not "not a valid int"
    ("widths", [4, 0], "widths[1]: must be >= 1, got 0"),
    ("inner", [{"rate": 1.0}, {"rate": float("nan")}], "inner[1].rate: must be a finite number, got nan"),
])
def test_declared_ranges_are_enforced_with_the_key_and_value(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(_Ranged, {key: value})
    assert str(info.value) == message


def test_values_inside_ranges_and_their_closed_ends_are_accepted() -> None:
    built = build(_Ranged, {"lr": 1e-12, "momentum": 0, "delta": -1, "cap": 5, "devices": 2, "per_device": None,
                            "widths": [1, 64]})
    assert (built.lr, built.momentum, built.delta, built.cap, built.per_device) == (1e-12, 0.0, -1.0, 5.0, None)
    assert build(_Ranged, {"delta": 1, "per_device": 3}).per_device == 3


def test_range_membership_and_text() -> None:
    assert 0.5 in Range(0, 1) and 1 in Range(0, 1) and 1 not in Range(0, 1, high_open=True)
    assert float("nan") not in Range() and True not in Range() and "1" not in Range()
    assert float("inf") in Range()  # finiteness is the float type's rule, checked before any range
    assert [str(r) for r in (Range(0, low_open=True), Range(1), Range(high=2, high_open=True), Range(),
                             Range(-1, 1), Range(0, 1, low_open=True, high_open=True))] == \
        ["> 0", ">= 1", "< 2", "any number", "in [-1, 1]", "in (0, 1)"]


def test_config_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("rounds: 3\nout: café\n".encode("latin-1"))
    message = f"{path}: not a UTF-8 text file (byte 0xe9 at offset 18); save the config as UTF-8"
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == message
    for command in ("run", "recsys", "cache"):  # before: UnicodeDecodeError traceback
        assert main([command, "--config", str(path), "--out", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"fedge {command}: error: {message}"]


def test_utf8_config_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("rounds: 3\nout: runs/café\n", encoding="utf-8")
    assert load_yaml(path) == {"rounds": 3, "out": "runs/café"}


def test_unreadable_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.yaml"
    path.write_text("rounds: 3\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match=r"locked\.yaml: cannot read the config file \(Permission denied\)$"):
        load_yaml(path)
