"""The Synthetic(α, β) federated benchmark of FedProx (Li et al., "Federated Optimization in Heterogeneous Networks",
MLSys 2020; reference generator `data/synthetic_1_1/generate_synthetic.py` in the FedProx repository).

Each device k draws its own softmax-regression model and its own input distribution, so α controls how much the
local models differ and β how much the local data differ:

    u_k ~ N(0, α),  W_k ~ N(u_k, 1) ∈ R^{60×10},  b_k ~ N(u_k, 1) ∈ R^{10}
    B_k ~ N(0, β),  v_k ~ N(B_k, 1) ∈ R^{60},     x ~ N(v_k, Σ),  Σ = diag(j^-1.2), j = 1..60
    y = argmax(softmax(W_k^T x + b_k))

The number of samples on a device is `floor(LogNormal(samples_mean, samples_sigma)) + min_samples` (the reference
uses LogNormal(4, 2) + 50: a heavy-tailed, power-law-like spread). As in the reference code, α and β are the
*standard deviations* passed to the normal draws (the paper writes them as variances); `iid=True` gives the paper's
Synthetic-IID instead: one shared model W, b ~ N(0, 1) and x ~ N(0, Σ) on every device. Each device's samples are
shuffled and the last `test_fraction` held out (the reference uses 10 %), so every device has local train and test
data — what personalised FL (e.g. DPMN) evaluates on.

All randomness comes from the `torch.Generator` passed in, so a seeded generator reproduces the data exactly.
"""

from __future__ import annotations

import torch

from fedge.config import check
from fedge.data.base import ArrayDataset

DIMENSION = 60
NUM_CLASSES = 10


def _normal(mean: torch.Tensor | float, std: float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return mean + std * torch.randn(shape, generator=generator, dtype=torch.float64)


def generate_synthetic(num_devices: int, alpha: float, beta: float, generator: torch.Generator,
                       samples_mean: float = 4.0, samples_sigma: float = 2.0, min_samples: int = 50,
                       test_fraction: float = 0.1, iid: bool = False,
                       dimension: int = DIMENSION, num_classes: int = NUM_CLASSES,
                       ) -> tuple[ArrayDataset, list[torch.Tensor], list[torch.Tensor]]:
    """Generate Synthetic(α, β) for `num_devices` devices.

    Returns `(dataset, device_train_indices, device_test_indices)`: the dataset holds every device's train samples
    (in device order) in `x_train`/`y_train` and test samples in `x_test`/`y_test` (float32 [n, dimension], int64
    labels); `device_train_indices[k]` indexes device k's rows of `x_train`, `device_test_indices[k]` its rows of
    `x_test`.
    """
    check(num_devices >= 1, f"synthetic: num_devices must be >= 1, got {num_devices}")
    check(alpha >= 0 and beta >= 0, f"synthetic: alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    check(samples_sigma >= 0, f"synthetic: samples_sigma must be >= 0, got {samples_sigma}")
    check(min_samples >= 2, f"synthetic: min_samples must be >= 2, got {min_samples}")
    check(0.0 < test_fraction < 1.0, f"synthetic: test_fraction must be in (0, 1), got {test_fraction}")
    check(dimension >= 1 and num_classes >= 2, f"synthetic: need dimension >= 1 and num_classes >= 2, got "
                                               f"{dimension} and {num_classes}")
    g = generator
    counts = _normal(samples_mean, samples_sigma, (num_devices,), g).exp().floor().long() + min_samples
    model_means = _normal(0.0, alpha, (num_devices,), g)
    data_means = _normal(0.0, beta, (num_devices,), g)
    cov_sqrt = torch.arange(1, dimension + 1, dtype=torch.float64).pow(-1.2).sqrt()
    shared_w = _normal(0.0, 1.0, (dimension, num_classes), g)
    shared_b = _normal(0.0, 1.0, (num_classes,), g)

    xs_train, ys_train, xs_test, ys_test = [], [], [], []
    train_idx: list[torch.Tensor] = []
    test_idx: list[torch.Tensor] = []
    n_train = n_test = 0
    for k in range(num_devices):
        n = int(counts[k])
        if iid:
            v, w, b = torch.zeros(dimension, dtype=torch.float64), shared_w, shared_b
        else:
            v = _normal(data_means[k], 1.0, (dimension,), g)
            w = _normal(model_means[k], 1.0, (dimension, num_classes), g)
            b = _normal(model_means[k], 1.0, (num_classes,), g)
        x = v + torch.randn((n, dimension), generator=g, dtype=torch.float64) * cov_sqrt
        y = (x @ w + b).argmax(dim=1)  # softmax is monotone: argmax of the logits
        order = torch.randperm(n, generator=g)
        x, y = x[order], y[order]
        k_train = int((1.0 - test_fraction) * n)
        k_train = min(max(k_train, 1), n - 1)
        xs_train.append(x[:k_train])
        ys_train.append(y[:k_train])
        xs_test.append(x[k_train:])
        ys_test.append(y[k_train:])
        train_idx.append(torch.arange(n_train, n_train + k_train))
        test_idx.append(torch.arange(n_test, n_test + n - k_train))
        n_train += k_train
        n_test += n - k_train

    name = "synthetic_iid" if iid else f"synthetic_{alpha:g}_{beta:g}"
    dataset = ArrayDataset(name, torch.cat(xs_train).float(), torch.cat(ys_train), torch.cat(xs_test).float(),
                           torch.cat(ys_test), num_classes=num_classes)
    return dataset, train_idx, test_idx
