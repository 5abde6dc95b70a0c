"""The offline digits default is standardized with its training images' statistics only (issue 17)."""

from __future__ import annotations

import torch

from fedge.data.digits import load_digits


def test_training_images_alone_set_the_standardization() -> None:
    data = load_digits(seed=0)
    assert len(data.x_train) + len(data.x_test) == 1797
    # exactly zero mean and unit deviation over the training images (up to float rounding) ...
    assert abs(float(data.x_train.mean())) < 1e-5
    assert abs(float(data.x_train.std()) - 1.0) < 1e-5
    # ... and the test images carry their own, different offset: they did not take part
    assert abs(float(data.x_test.mean())) > 1e-4


def test_another_split_is_standardized_by_its_own_training_images() -> None:
    first, second = load_digits(seed=0), load_digits(seed=1)
    assert not torch.equal(first.x_train, second.x_train)
    assert abs(float(second.x_train.mean())) < 1e-5
