"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1,797 real 8×8 grey images, 10 classes.

It ships inside scikit-learn, so it is the offline default: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedge.data.base import ArrayDataset


def load_digits(data_dir: Path | None = None, download: bool = False, test_fraction: float = 0.3,
                seed: int = 0) -> ArrayDataset:
    """Stratified train/test split (seeded) of the 1,797 images, as [n, 1, 8, 8] float tensors, standardized with
    the mean and standard deviation of the training images only (test pixels must not shape the inputs)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr, te = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    return ArrayDataset("digits", x[tr], y[tr], x[te], y[te], num_classes=10)
