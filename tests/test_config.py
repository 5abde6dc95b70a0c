from dataclasses import dataclass

import pytest

from fedge.config import ConfigError, apply_overrides, build


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
