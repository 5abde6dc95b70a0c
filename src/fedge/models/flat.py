"""The mapping between one flat parameter vector (a row of the bank) and a module's named parameters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamSlice:
    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    prunable: bool  # weights of conv/linear layers; biases are kept dense (tiny, and pruning them hurts)


class FlatModel:
    """A stateless module plus the layout of its parameters in a flat vector of length `dim`.

    The module's own parameters are only a template (shapes and the common initialisation); training always passes
    parameters explicitly through `forward(flat, x)`.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        slices, offset = [], 0
        for name, param in module.named_parameters():
            n = param.numel()
            slices.append(ParamSlice(name, tuple(param.shape), offset, offset + n, param.dim() > 1))
            offset += n
        self.slices: tuple[ParamSlice, ...] = tuple(slices)
        self.dim = offset
        for p in module.parameters():
            p.requires_grad_(False)

    def initial_vector(self) -> torch.Tensor:
        """The module's current parameters as one flat vector (the common initialisation x0)."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of `flat` shaped as the module's parameters (no copies; gradients flow back into `flat`)."""
        return {s.name: flat[s.start:s.stop].view(s.shape) for s in self.slices}

    def forward(self, flat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(flat), (inputs,))

    def prunable_mask(self) -> torch.Tensor:
        """Boolean [d]: True where a coordinate may be pruned."""
        mask = torch.zeros(self.dim, dtype=torch.bool)
        for s in self.slices:
            if s.prunable:
                mask[s.start:s.stop] = True
        return mask

    def layer_groups(self) -> list[tuple[int, int]]:
        """(start, stop) of each prunable tensor: magnitude pruning keeps the same density in every layer."""
        return [(s.start, s.stop) for s in self.slices if s.prunable]

    def head_range(self) -> tuple[int, int]:
        """(start, stop) of the last layer's weight and bias: the classifier head."""
        weights = [s for s in self.slices if s.prunable]
        last = weights[-1]
        tail = [s for s in self.slices if s.start >= last.start]
        return last.start, max(s.stop for s in tail)
