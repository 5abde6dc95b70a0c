"""LeNet-5, AlexNet (adapted to 28×28), VGG-16 and an MLP, sized from the input shape.

None uses batch normalisation or dropout state, so a model is a pure function of its parameter vector: exactly what
the stacked parameter bank needs (no running statistics to keep per device).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch
from torch import nn

from fedge.config import ConfigError
from fedge.registry import Registry


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998): conv(6,5×5)-pool-conv(16,5×5)-pool-fc120-fc84-fc.

    Inputs smaller than 16 px (the 8×8 digits) pad the second convolution so the feature map does not vanish.
    """
    channels, height = input_shape[0], input_shape[1]
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2 if height < 16 else 0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        features, nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
    )


def alexnet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012) adapted to 28×28 inputs: five 3×3 convolutions, three pools, two fc-1024."""
    channels = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(channels, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(
        features, nn.Linear(flat, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, num_classes)
    )


def vgg16(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG-16 (Simonyan & Zisserman 2015), configuration D, no batch norm; classifier sized to the input."""
    layers: list[nn.Module] = []
    channels = input_shape[0]
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.ReLU()]
            channels = int(width)
    layers.append(nn.Flatten())
    features = nn.Sequential(*layers)
    flat = _flat_size(features, input_shape)
    hidden = 4096 if input_shape[-1] >= 224 else 512
    return nn.Sequential(
        features, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> nn.Module:
    """A one-hidden-layer perceptron on flattened inputs (the FedProx Synthetic benchmark's scale of model)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


Constructor = Callable[[tuple[int, ...], int], nn.Module]
MODELS: Registry[Constructor] = Registry("model")
MODELS.add("lenet5", lenet5, "LeNet-5 (LeCun et al. 1998), for image inputs")
MODELS.add("alexnet", alexnet, "AlexNet adapted to 28x28 inputs")
MODELS.add("vgg16", vgg16, "VGG-16")
MODELS.add("mlp", mlp, "a Linear/ReLU stack (batched training)")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model: unknown model {name!r} (choose from {', '.join(MODELS)})")
    if name in ("lenet5", "alexnet", "vgg16") and len(input_shape) != 3:
        raise ConfigError(f"model: {name} needs image inputs [C, H, W], got features of shape {list(input_shape)}")
    module = MODELS.create(name, input_shape, num_classes)
    assert isinstance(module, nn.Module)
    return module
