"""Seeded partitions of a labelled dataset over N devices, and personalized test sets.

* `iid`            : a random equal split.
* `dirichlet:α`    : label skew; each class is split over devices in proportions drawn from Dirichlet(α)
                     (Hsu et al. 2019), any finite α > 0. Small α → few classes per device; as α → 0 each class
                     goes to one device, so α below about 0.01 needs at least as many classes as devices.
* `shards:c`       : pathological non-IID of McMahan et al. 2017: samples sorted by label, cut into N·c shards,
                     each device gets c shards (so about c classes).

Each device's test set follows its own training label distribution (personalized accuracy): for device i with
label histogram p_i, it gets round(p_i(c) · n_test) test samples of class c drawn from the global test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedge.config import ConfigError


@dataclass(frozen=True)
class PartitionSpec:
    kind: str
    value: float = 0.0

    @staticmethod
    def parse(text: str) -> PartitionSpec:
        """`iid`, `dirichlet:α` (finite α > 0) or `shards:c` (whole c >= 1); anything else is a ConfigError."""
        kind, _, raw = text.partition(":")
        if kind == "iid" and not raw:
            return PartitionSpec("iid")
        if kind in ("dirichlet", "shards") and raw:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"partition: {text!r} needs a number after ':'") from None
            if not math.isfinite(value):  # Dirichlet(nan) or Dirichlet(inf) would never finish sampling
                raise ConfigError(f"partition: {text!r} needs a finite number after ':'")
            if value <= 0 or (kind == "shards" and not value.is_integer()):
                raise ConfigError(f"partition: {text!r} needs a positive {'integer' if kind == 'shards' else 'number'}")
            return PartitionSpec(kind, value)
        raise ConfigError(f"partition: {text!r} is not one of iid, dirichlet:ALPHA, shards:C")


def partition(labels: torch.Tensor, num_devices: int, spec: PartitionSpec, generator: torch.Generator,
              min_samples: int = 2) -> list[torch.Tensor]:
    """Indices of `labels` held by each device (sorted)."""
    n = len(labels)
    if n < num_devices * min_samples:
        raise ConfigError(f"devices: {num_devices} devices need at least {num_devices * min_samples} samples, "
                          f"the dataset has {n}")
    if spec.kind == "iid":
        perm = torch.randperm(n, generator=generator)
        parts = list(torch.tensor_split(perm, num_devices))
    elif spec.kind == "shards":
        per_device = int(spec.value)
        if n // (num_devices * per_device) * per_device < min_samples:  # the smallest device's share
            raise ConfigError(f"partition: shards:{spec.value:g} over {num_devices} devices leaves a device with "
                              f"fewer than {min_samples} of the dataset's {n} samples; use fewer shards or devices")
        parts = _shards(labels, num_devices, per_device, generator)
    else:
        parts = _dirichlet(labels, num_devices, spec.value, generator, min_samples)
    return [p.sort().values for p in parts]


def _shards(labels: torch.Tensor, num_devices: int, per_device: int, generator: torch.Generator) -> list[torch.Tensor]:
    # Sort by label with a random order inside each label, so shards are label-pure where possible.
    noise = torch.rand(len(labels), generator=generator)
    order = torch.argsort(labels.double() + noise * 0.5)
    shards = torch.tensor_split(order, num_devices * per_device)
    assignment = torch.randperm(num_devices * per_device, generator=generator).view(num_devices, per_device)
    return [torch.cat([shards[int(s)] for s in row]) for row in assignment]


def _dirichlet(labels: torch.Tensor, num_devices: int, alpha: float, generator: torch.Generator,
               min_samples: int) -> list[torch.Tensor]:
    classes = torch.unique(labels)
    for _ in range(100):
        parts: list[list[torch.Tensor]] = [[] for _ in range(num_devices)]
        for c in classes:
            idx = torch.nonzero(labels == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=generator)]
            proportions = _sample_dirichlet(float(alpha), num_devices, generator)
            cuts = (torch.cumsum(proportions, 0)[:-1] * len(idx)).round().long()
            for device, chunk in enumerate(torch.tensor_split(idx, cuts)):
                parts[device].append(chunk)
        out = [torch.cat(p) for p in parts]
        if min(len(p) for p in out) >= min_samples:
            return out
    raise ConfigError(f"partition: dirichlet:{alpha:g} left a device with fewer than {min_samples} samples "
                      f"after 100 draws ({len(classes)} classes over {num_devices} devices); use a larger alpha or "
                      "fewer devices")


def _sample_dirichlet(alpha: float, parts: int, generator: torch.Generator) -> torch.Tensor:
    """A symmetric Dirichlet(α) sample over `parts` parts (float64), through normalised Gamma draws in log space,
    using only the explicit generator.

    Gamma(α ≥ 1) by the Marsaglia-Tsang squeeze; Gamma(α < 1) as Gamma(α + 1)·U^(1/α) (Marsaglia & Tsang 2000),
    whose U^(1/α) underflows to 0 for small α (α = 0.001 and U < 0.5 already), leaving 0/0. Its logarithm
    log Gamma(α + 1) + log(U)/α is kept multiplied by α, which is finite for any α > 0; the largest is subtracted
    before dividing by α, so the softmax sees values <= 0 with one 0 (as α → 0 the sample tends to a vertex of the
    simplex, as the distribution does).
    """
    if alpha >= 1.0:
        log_draws = torch.stack([torch.log(_gamma(alpha, generator)) for _ in range(parts)])
    else:
        scaled = torch.stack([_scaled_log_gamma_below_one(alpha, generator) for _ in range(parts)])
        log_draws = (scaled - scaled.max()) / alpha
    return torch.softmax(log_draws, 0)


def _scaled_log_gamma_below_one(alpha: float, generator: torch.Generator) -> torch.Tensor:
    """α·log of a Gamma(α < 1) draw: α·log Gamma(α + 1) + log U, finite however small α is."""
    u = torch.rand((), generator=generator, dtype=torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    return alpha * torch.log(_gamma(alpha + 1.0, generator)) + torch.log(u)


def _gamma(alpha: float, generator: torch.Generator) -> torch.Tensor:
    """A Gamma(α >= 1) draw (float64) by the Marsaglia-Tsang squeeze."""
    d = alpha - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    while True:
        x = torch.randn((), generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = torch.rand((), generator=generator, dtype=torch.float64)
        if torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v):
            return d * v


def personalized_test_indices(train_labels: torch.Tensor, device_train: list[torch.Tensor],
                              test_labels: torch.Tensor, generator: torch.Generator,
                              per_device: int | None = None) -> list[torch.Tensor]:
    """Test indices for each device following its training label distribution.

    `per_device` defaults to the global test size divided by the number of devices (at least 20 samples).
    Within a class, samples are drawn without replacement for one device (devices may share test samples).
    """
    num_classes = int(max(int(train_labels.max()), int(test_labels.max())) + 1)
    by_class = [torch.nonzero(test_labels == c).flatten() for c in range(num_classes)]
    size = per_device or max(20, len(test_labels) // len(device_train))
    out = []
    for idx in device_train:
        hist = torch.bincount(train_labels[idx], minlength=num_classes).double()
        want = (hist / hist.sum() * size).round().long()
        chosen = []
        for c in range(num_classes):
            pool = by_class[c]
            k = min(int(want[c]), len(pool))
            if k > 0:
                chosen.append(pool[torch.randperm(len(pool), generator=generator)[:k]])
        out.append(torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long))
    return out
