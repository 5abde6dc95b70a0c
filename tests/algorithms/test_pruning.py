"""The adaptive pruning rule: gradual ramp, per-device targets, pause and back-off on accuracy drops."""

from __future__ import annotations

import torch

from fedge.algorithms.components.pruning import AdaptivePruner
from fedge.algorithms.context import Round, RunContext
from fedge.algorithms.state import DeviceState
from fedge.experiment import PruningConfig


def _setup(targets: list[float], ramp: int = 4,
           tol: float = 0.05) -> tuple[DeviceState, RunContext, AdaptivePruner]:
    n, d = len(targets), 400
    g = torch.Generator().manual_seed(0)
    state = DeviceState.create(torch.zeros(d), n)
    state.bank = torch.randn(n, d, generator=g)
    ctx = RunContext.standalone(n, d, layer_groups=[(0, 300)], prunable=torch.arange(d) < 300, head=(200, 400),
                                target_density=torch.tensor(targets), val_sizes=torch.full((n,), 100))
    pruner = AdaptivePruner(PruningConfig(ramp_rounds=ramp, tolerance=tol))
    pruner.start(ctx, state)
    return state, ctx, pruner


def _round(active: torch.Tensor, number: int = 1) -> Round:
    return Round(number, active, active, active)


def _kept(state: DeviceState) -> list[int]:
    return state.masks[:, :300].sum(dim=1).tolist()


def test_density_ramps_gradually_to_each_devices_target() -> None:
    state, ctx, pruner = _setup([0.5, 0.2])
    active = torch.ones(2, dtype=torch.bool)
    history = []
    for _ in range(6):
        pruner.step(state, ctx, _round(active), torch.tensor([0.9, 0.9]))
        history.append(_kept(state))
    assert history == [[262, 240], [225, 180], [188, 120], [150, 60], [150, 60], [150, 60]]
    assert bool((state.bank[~state.masks] == 0).all())
    assert bool(state.masks[:, 300:].all())  # biases are never pruned


def test_pause_and_back_off_on_validation_drops() -> None:
    state, ctx, pruner = _setup([0.5, 0.5, 0.5], tol=0.05)
    active = torch.ones(3, dtype=torch.bool)
    pruner.step(state, ctx, _round(active), torch.tensor([0.9, 0.9, 0.9]))
    pruner.step(state, ctx, _round(active), torch.tensor([0.9, 0.9, 0.9]))
    assert _kept(state) == [225, 225, 225]
    # With 100 validation samples the threshold is 0.06: device 0 steady (advances), device 1 drops 0.08
    # (pauses), device 2 drops 0.2 (backs off one step).
    pruner.step(state, ctx, _round(active, 3), torch.tensor([0.9, 0.82, 0.7]))
    assert _kept(state) == [188, 225, 262]
    assert pruner.progress.tolist() == [3, 2, 1]
    # Inactive devices (failed this round) keep their masks and progress.
    pruner.step(state, ctx, _round(torch.tensor([False, True, True]), 4), torch.tensor([0.9, 0.82, 0.7]))
    assert _kept(state)[0] == 188 and pruner.progress[0] == 3
