"""Named random streams: pure functions of (seed, purpose, device, round)."""

from __future__ import annotations

import torch

from fedge.core.streams import Streams, generator, uniform


def test_a_devices_draws_do_not_depend_on_who_else_draws() -> None:
    devices = torch.tensor([5, 2, 9, 0])
    together = uniform(0, "probe", 3, devices, 6)
    for k, device in enumerate(devices.tolist()):
        alone = uniform(0, "probe", 3, torch.tensor([device]), 6)
        assert torch.equal(alone[0], together[k])
    assert torch.equal(uniform(0, "probe", 3, devices, torch.tensor([4, 1])), together[:, [4, 1]])


def test_streams_differ_by_seed_purpose_device_and_round() -> None:
    base = uniform(0, "probe", 1, torch.tensor([3]), 64)
    for other in (uniform(1, "probe", 1, torch.tensor([3]), 64), uniform(0, "train", 1, torch.tensor([3]), 64),
                  uniform(0, "probe", 2, torch.tensor([3]), 64), uniform(0, "probe", 1, torch.tensor([4]), 64)):
        assert not torch.equal(base, other)
    assert torch.equal(base, uniform(0, "probe", 1, torch.tensor([3]), 64))


def test_uniforms_look_uniform_and_stay_below_one() -> None:
    values = uniform(7, "check", 0, torch.arange(200), 500).flatten()
    assert float(values.min()) >= 0 and float(values.max()) < 1
    assert abs(float(values.mean()) - 0.5) < 0.01 and abs(float(values.var()) - 1 / 12) < 0.005
    histogram = torch.histc(values, bins=10, min=0, max=1)
    assert float((histogram / len(values) - 0.1).abs().max()) < 0.01


def test_generators_are_keyed_and_fresh() -> None:
    a = torch.randperm(20, generator=generator(0, "train", 4, 2))
    b = torch.randperm(20, generator=Streams(0).generator("train", 4, 2))
    c = torch.randperm(20, generator=generator(0, "train", 4, 3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    listed = Streams(0).device_generators("train", torch.tensor([4, 5]), 2)
    assert torch.equal(torch.randperm(20, generator=listed[0]), a)
