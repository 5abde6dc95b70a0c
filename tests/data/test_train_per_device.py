"""`data.train_per_device` (issue 17's data-scarcity sweep): it caps each device's training set and changes nothing
else — not the partition, the validation and test sets, or a device already under the cap."""

from __future__ import annotations

import pytest
import torch

from fedge.config import ConfigError, build
from fedge.data.federated import load_federated
from fedge.experiment import DataConfig


@pytest.mark.parametrize("dataset,extra", [("digits", {}), ("synthetic", {"devices": 6})])
def test_cap_keeps_everything_else(dataset: str, extra: dict[str, int]) -> None:
    cfg = build(DataConfig, {"dataset": dataset, "devices": 10, **extra})
    full = load_federated(cfg, seed=3)
    cap = int(sorted(len(d.y_train) for d in full.devices)[len(full.devices) // 2])  # about half stay whole
    capped = load_federated(build(DataConfig, {"dataset": dataset, "devices": 10, **extra,
                                               "train_per_device": cap}), seed=3)
    for before, after in zip(full.devices, capped.devices, strict=True):
        assert len(after.y_train) == min(cap, len(before.y_train))
        for name in ("x_val", "y_val", "x_test", "y_test"):
            assert torch.equal(getattr(before, name), getattr(after, name)), name
        if len(before.y_train) <= cap:
            assert torch.equal(before.x_train, after.x_train)
        else:  # a subset of the device's own training samples, in their original order
            rows = [int(torch.nonzero((before.x_train == x).flatten(1).all(1)).flatten()[0]) for x in after.x_train]
            assert rows == sorted(rows) and len(set(rows)) == cap
    again = load_federated(build(DataConfig, {"dataset": dataset, "devices": 10, **extra,
                                              "train_per_device": cap}), seed=3)
    assert all(torch.equal(a.x_train, b.x_train) for a, b in zip(capped.devices, again.devices))


def test_default_is_no_cap_and_zero_is_refused() -> None:
    assert DataConfig().train_per_device is None
    with pytest.raises(ConfigError, match=r"^data\.train_per_device: must be >= 1, got 0$"):
        from fedge.experiment import ExperimentConfig

        build(ExperimentConfig, {"data": {"train_per_device": 0}})
