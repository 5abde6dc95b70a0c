"""Per-sample gradients for DP-SGD (`fedge.runtimes.dp_sgd`), each equal to Opacus's `GradSampleModule` ones
(tests/runtimes/test_dp_sgd.py).

* `LayerTaps`: Linear/Conv2d models device by device. Forward hooks record each layer's input and output, and one
  backward pass gives the gradients with respect to the outputs. A linear layer's per-sample weight gradient is the
  outer product ∂z_b h_bᵀ, clipped and summed without being formed (Goodfellow 2015); a convolution's is
  ∂z_b unfold(h_b)ᵀ (Opacus's unfolding) or one convolution grouped by sample.
* `functional_per_sample`: anything else, with `torch.func.vmap(grad_and_value(...))` over samples.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from fedge.core.privacy import PerSample
from fedge.models.flat import FlatModel

UNFOLD_UP_TO = 1 << 17  # a convolution whose unfolded input has at most this many floats is unfolded (measured)


def _tappable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1
                                            and not isinstance(layer.padding, str) and layer.padding_mode == "zeros")


def taps_cover(model: FlatModel) -> bool:
    """Whether every parameter of the model is the weight or bias of a Linear or (ungrouped) Conv2d layer."""
    names = {f"{prefix}.{p}".lstrip(".") for prefix, layer in model.module.named_modules() if _tappable(layer)
             for p, _ in layer.named_parameters(recurse=False)}
    return names == {s.name for s in model.slices}


class LayerTaps:
    """Forward hooks on a module's Linear and Conv2d layers recording each call's input and output, while entered.

    Per-sample gradients come out as: linear layers factored (∂z_b, h_b; the bias gradient is ∂z_b); every other
    parameter (convolutions) materialised in [B, n] buffers, one per run of consecutive such coordinates. Forming
    the linear ones instead costs memory traffic of B·d floats per step (8 MB for 28x28 LeNet-5 at B = 32), which
    made the step 1.8x slower there."""

    def __init__(self, module: nn.Module, model: FlatModel) -> None:
        slices = {s.name: s for s in model.slices}
        self.dim = model.dim
        self.module = module
        self.layers: list[tuple[nn.Module, slice, slice | None]] = []
        for prefix, layer in module.named_modules():
            if _tappable(layer):
                w, b = slices[f"{prefix}.weight".lstrip(".")], slices.get(f"{prefix}.bias".lstrip("."))
                self.layers.append((layer, slice(w.start, w.stop), None if b is None else slice(b.start, b.stop)))
        self.records: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = [[] for _ in self.layers]
        factored = sorted((c for layer, w, b in self.layers if isinstance(layer, nn.Linear) for c in (w, b)
                           if c is not None), key=lambda c: c.start)
        self.runs: list[slice] = []  # the coordinates outside linear layers, as maximal runs
        start = 0
        for coords in factored:
            if coords.start > start:
                self.runs.append(slice(start, coords.start))
            start = max(start, coords.stop)
        if start < self.dim:
            self.runs.append(slice(start, self.dim))
        self.targets: dict[int, tuple[int, slice]] = {}  # parameter start -> (run, columns in the run's buffer)
        for k, run in enumerate(self.runs):
            for layer, w, b in self.layers:
                for coords in (() if isinstance(layer, nn.Linear) else (w, b)):
                    if coords is not None and run.start <= coords.start < run.stop:
                        self.targets[coords.start] = (k, slice(coords.start - run.start, coords.stop - run.start))

    @contextlib.contextmanager
    def active(self) -> Iterator[LayerTaps]:
        handles = [layer.register_forward_hook(functools.partial(self._record, k))
                   for k, (layer, _, _) in enumerate(self.layers)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, k: int, _: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.records[k].append((inputs[0].detach(), output, output._version))

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[PerSample, torch.Tensor] | None:
        """Per-sample gradients ([1, B, ·] parts) and losses [B] of the module on (x, y); None when a layer ran
        other than once, its output was changed in place or a linear layer saw more than [B, in] (the caller then
        falls back to `functional_per_sample`)."""
        for record in self.records:
            record.clear()
        with torch.enable_grad():
            losses = F.cross_entropy(self.module(x), y, reduction="none")
            if any(len(r) != 1 or r[0][1]._version != r[0][2] or (isinstance(layer, nn.Linear) and r[0][0].dim() != 2)
                   for r, (layer, _, _) in zip(self.records, self.layers, strict=True)):
                return None
            outputs = torch.autograd.grad(losses.sum(), [r[0][1] for r in self.records])
        b = len(y)
        buffers = [torch.empty(b, run.stop - run.start) for run in self.runs]
        grads = PerSample(self.dim, [(run, buffer[None]) for run, buffer in zip(self.runs, buffers, strict=True)])

        def store(coords: slice, g: torch.Tensor) -> None:
            k, columns = self.targets[coords.start]
            buffers[k][:, columns] = g

        for (layer, weight, bias), record, go in zip(self.layers, self.records, outputs, strict=True):
            if isinstance(layer, nn.Conv2d):
                store(weight, _conv_per_sample(layer, record[0][0], go))
                if bias is not None:
                    store(bias, go.sum((2, 3)))
            else:
                grads.outer.append((weight, bias, go[None], record[0][0][None]))
        return grads, losses.detach()


def _conv_per_sample(layer: nn.Conv2d, h: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients [B, O·C·kh·kw] of a convolution from its input h and output gradient go: ∂z_b
    unfold(h_b)ᵀ (Opacus's unfolding) for small feature maps, else the weight gradient of one convolution grouped by
    sample (PyTorch's expanded weights), about 2x faster than unfolding on 28x28 LeNet-5 and slower on 8x8 digits."""
    b, w = len(h), layer.weight.detach()
    if b * go[0, 0].numel() * w[0].numel() <= UNFOLD_UP_TO:
        unfolded = F.unfold(h, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return torch.bmm(go.flatten(2), unfolded.transpose(1, 2)).flatten(1)
    return torch.ops.aten.convolution_backward(
        go.flatten(0, 1)[None], h.flatten(0, 1)[None], w.expand(b, *w.shape).flatten(0, 1), None, layer.stride,
        layer.padding, layer.dilation, False, (0, 0), b, (False, True, False))[1].view(b, -1)


def functional_per_sample(model: FlatModel, params: torch.Tensor, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[PerSample, torch.Tensor]:
    """Per-sample gradients [M, B, d] and losses [M, B] of rows `params` [M, d] on x [M, B, ...], y [M, B], with
    `torch.func`: vmap over devices of vmap over samples of the gradient of one sample's loss."""
    def loss(p: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model.forward(p, xi[None]), yi[None])

    g, losses = vmap(vmap(grad_and_value(loss), in_dims=(None, 0, 0)))(params, x, y)
    return PerSample(model.dim, [(slice(0, model.dim), g)]), losses


__all__ = ["LayerTaps", "functional_per_sample", "taps_cover"]
