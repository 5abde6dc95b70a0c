"""Per-sample weight gradients of a convolution, and the reused buffers the sequential DP-SGD step writes them into
(`fedge.runtimes.per_sample.LayerTaps`).

A convolution's per-sample weight gradient is ∂z_b unfold(h_b)ᵀ. Three ways compute it, chosen by shape
(`conv_method`), each equal to Opacus's `GradSampleModule` to rounding (tests/runtimes/test_per_sample.py): Opacus's
unfolding for small feature maps, or the weight gradient of one convolution grouped by sample (PyTorch's expanded
weights), in channels-last layout for narrow convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

UNFOLD_UP_TO = 1 << 17  # a convolution whose unfolded input has at most this many floats is unfolded (measured)


def conv_method(layer: nn.Conv2d, b: int, output_pixels: int) -> str:
    """How `conv_per_sample` computes a convolution's per-sample weight gradients for a batch of b: "unfold" for
    small unfolded inputs, "channels_last" (the grouped convolution in channels-last layout) for narrow convolutions,
    else "grouped". Chosen by shape, never by timing, so a run's numbers do not depend on the machine's load.
    Measured with one intra-op thread (torch 2.13, oneDNN, AVX-512; `benchmarks/dp_sgd_cost.py`): the channels-last
    layout computes 28x28 LeNet-5's two per-sample weight gradients in 0.5x and 0.7x the time of the contiguous one
    (1->6 and 6->16 channels, 5x5, B = 32), and 3->16 in 0.5x and 8->16 in 0.9x; with 32 or more output channels, or
    16->16, it was 1.2-3x slower."""
    shape = layer.weight.shape
    if b * output_pixels * math.prod(shape[1:]) <= UNFOLD_UP_TO:
        return "unfold"
    return "channels_last" if shape[0] <= 16 and shape[0] * shape[1] <= 128 else "grouped"


def grouped_placeholder(layer: nn.Conv2d, b: int, method: str) -> torch.Tensor:
    """The weight argument [B·O, C, kh, kw] of `conv_per_sample`'s grouped convolution (zeros: only its shape and
    memory layout are read; a prefix of rows of a larger one serves a smaller batch)."""
    shape = layer.weight.shape
    out = torch.zeros(b * shape[0], *shape[1:])
    return out.contiguous(memory_format=torch.channels_last) if method == "channels_last" else out


def conv_per_sample(layer: nn.Conv2d, h: torch.Tensor, go: torch.Tensor,
                    grouped_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weight gradients [B, O, C, kh, kw] of a convolution from its input h and output gradient go, by
    `conv_method`'s method: ∂z_b unfold(h_b)ᵀ (Opacus's unfolding; about 2x slower than the grouped convolution on
    28x28 LeNet-5 and faster on 8x8 digits) or the weight gradient of one convolution grouped by sample. The grouped
    convolution's weight only gives the shape and layout (a weight gradient does not depend on the weight):
    `grouped_weight`, if given, is one kept in the method's layout (`grouped_placeholder`)."""
    b = len(h)
    method = conv_method(layer, b, math.prod(go.shape[2:]))
    if method == "unfold":
        unfolded = F.unfold(h, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return torch.bmm(go.flatten(2), unfolded.transpose(1, 2)).view(b, *layer.weight.shape)
    if grouped_weight is None:
        grouped_weight = grouped_placeholder(layer, b, method)
    go, h = go.view(1, -1, *go.shape[2:]), h.view(1, -1, *h.shape[2:])
    if method == "channels_last":
        go, h = go.contiguous(memory_format=torch.channels_last), h.contiguous(memory_format=torch.channels_last)
    weight = torch.ops.aten.convolution_backward(go, h, grouped_weight, None, layer.stride, layer.padding,
                                                 layer.dilation, False, (0, 0), b, (False, True, False))[1]
    return weight.view(b, *layer.weight.shape)


@dataclass(frozen=True)
class BatchViews:
    """`Scratch`'s views for one batch size B: the seed of the backward pass [B], the per-sample gradients [B, n] of
    each run of convolution coordinates (and their transposes), and per convolution the [B, O, C, kh, kw] view its
    weight gradients go to and the [B, O] view of its bias gradients (None: no bias)."""

    ones: torch.Tensor
    buffers: list[torch.Tensor]
    transposed: list[torch.Tensor]
    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]


class Scratch:
    """The convolutions' per-sample gradients of a model's step, in buffers kept from step to step: one [capacity, n]
    buffer per run of convolution coordinates, grown to the largest batch seen, of which a batch of B uses the first
    B rows (so the memory is that of one step at the largest batch, as when each step allocated its own; Poisson
    batches vary in size from step to step). `convs` lists, per convolution, its index among the tapped layers, the
    layer, and (run, columns) of its weight and bias (None: no bias)."""

    def __init__(self, runs: list[slice],
                 convs: list[tuple[int, nn.Conv2d, tuple[int, slice], tuple[int, slice] | None]]) -> None:
        self.widths = [run.stop - run.start for run in runs]
        self.convs = convs
        self.capacity = 0
        self.storage: list[torch.Tensor] = []
        self.ones = torch.ones(0)
        self.views: dict[int, BatchViews] = {}
        # (conv, method) -> its grouped convolution's weight at capacity; (conv, B) -> the prefix of rows a batch of B
        # uses (None: B's method unfolds)
        self.full_placeholders: dict[tuple[int, str], torch.Tensor] = {}
        self.placeholders: dict[tuple[int, int], torch.Tensor | None] = {}

    def batch(self, b: int) -> BatchViews:
        """The views for a batch of b (made once per batch size; the buffers grow when b is the largest yet)."""
        if b > self.capacity:
            self.capacity = b
            self.storage = [torch.zeros(b, width) for width in self.widths]
            self.ones = torch.ones(b)
            self.views.clear()
            self.full_placeholders.clear()
            self.placeholders.clear()
        views = self.views.get(b)
        if views is None:
            buffers = [buffer[:b] for buffer in self.storage]
            views = self.views[b] = BatchViews(
                self.ones[:b], buffers, [buffer.t() for buffer in buffers],
                [buffers[k][:, columns].view(b, *layer.weight.shape) for _, layer, (k, columns), _ in self.convs],
                [None if bias is None else buffers[bias[0]][:, bias[1]] for _, _, _, bias in self.convs])
        return views

    def convolutions(self, views: BatchViews, inputs: list[torch.Tensor], outputs: tuple[torch.Tensor, ...]) -> None:
        """Write every convolution's per-sample weight and bias gradients into the batch's views, from the tapped
        layers' inputs and output gradients."""
        for (index, layer, _, _), weight_view, bias_view in zip(self.convs, views.weights, views.biases, strict=True):
            go = outputs[index]
            b = len(go)
            if (index, b) not in self.placeholders:
                method = conv_method(layer, b, math.prod(go.shape[2:]))
                if method != "unfold" and (index, method) not in self.full_placeholders:
                    self.full_placeholders[(index, method)] = grouped_placeholder(layer, self.capacity, method)
                self.placeholders[(index, b)] = (None if method == "unfold" else
                                                 self.full_placeholders[(index, method)][:b * layer.out_channels])
            weight_view.copy_(conv_per_sample(layer, inputs[index], go, self.placeholders[(index, b)]))
            if bias_view is not None:
                torch.sum(go, (2, 3), out=bias_view)


__all__ = ["BatchViews", "Scratch", "conv_method", "conv_per_sample", "grouped_placeholder"]
