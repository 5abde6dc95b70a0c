"""Per-sample gradients for DP-SGD (`fedge.runtimes.dp_sgd`), each equal to Opacus's `GradSampleModule` ones
(tests/runtimes/test_dp_sgd.py).

* `LayerTaps`: Linear/Conv2d models device by device. Forward hooks record each layer's input and output, and one
  backward pass gives the gradients with respect to the outputs. A linear layer's per-sample weight gradient is the
  outer product ∂z_b h_bᵀ, clipped and summed without being formed (Goodfellow 2015); a convolution's is
  ∂z_b unfold(h_b)ᵀ, materialised (`fedge.runtimes.conv_per_sample`). `clipped_sum` gives the sequential DP-SGD
  step the clipped sum directly, `per_sample` the per-sample gradients (`PerSample`) for the general path.
* `functional_per_sample`: anything else, with `torch.func.vmap(grad_and_value(...))` over samples.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from fedge.core.privacy import PerSample
from fedge.models.flat import FlatModel
from fedge.runtimes.conv_per_sample import Scratch, conv_per_sample


def _tappable(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1
                                            and not isinstance(layer.padding, str) and layer.padding_mode == "zeros")


def taps_cover(model: FlatModel) -> bool:
    """Whether every parameter of the model is the weight or bias of a Linear or (ungrouped) Conv2d layer."""
    names = {f"{prefix}.{p}".lstrip(".") for prefix, layer in model.module.named_modules() if _tappable(layer)
             for p, _ in layer.named_parameters(recurse=False)}
    return names == {s.name for s in model.slices}


@dataclass(frozen=True)
class KeptViews:
    """A device's kept coordinates (0/1 floats) as `LayerTaps.clipped_sum` reads them: per run of convolution
    coordinates, and per linear layer (weight [p, q], bias [p] or None)."""

    runs: list[torch.Tensor]
    linear: list[tuple[torch.Tensor, torch.Tensor | None]]


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
        self.total = torch.zeros(self.dim)  # `clipped_sum`'s result, rewritten by every call
        self.run_sums = [self.total[run] for run in self.runs]
        self.linear_sums = [(self.total[w].view(layer.weight.shape), None if b is None else self.total[b])
                            for layer, w, b in self.layers if isinstance(layer, nn.Linear)]
        self.scratch = Scratch(self.runs, [
            (k, layer, self.targets[w.start], None if b is None else self.targets[b.start])
            for k, (layer, w, b) in enumerate(self.layers) if isinstance(layer, nn.Conv2d)])

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
        self.records[k].append((inputs[0], output, output._version))  # read under no_grad: no detach needed

    def _output_grads(self, x: torch.Tensor, y: torch.Tensor,
                      ones: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None:
        """(losses [B], the loss gradients with respect to each layer's output) from one forward and one backward
        pass; None when a layer ran other than once, its output was changed in place or a linear layer saw more than
        [B, in]. `ones`: [B] ones to seed the backward pass with (created when None)."""
        for record in self.records:
            record.clear()
        with torch.enable_grad():
            losses = F.cross_entropy(self.module(x), y, reduction="none")
            if any(len(r) != 1 or r[0][1]._version != r[0][2] or (isinstance(layer, nn.Linear) and r[0][0].dim() != 2)
                   for r, (layer, _, _) in zip(self.records, self.layers, strict=True)):
                return None
            outputs = torch.autograd.grad(losses, [r[0][1] for r in self.records],
                                          torch.ones_like(losses) if ones is None else ones)
        return losses.detach(), outputs

    def kept_views(self, weights: torch.Tensor) -> KeptViews:
        """The views of a device's kept coordinates `weights` [d] (0/1 floats) that `clipped_sum` reads: per run of
        convolution coordinates, and per linear layer its weight's [p, q] and its bias's."""
        return KeptViews([weights[run] for run in self.runs],
                         [(weights[w].view(layer.weight.shape), None if b is None else weights[b])
                          for layer, w, b in self.layers if isinstance(layer, nn.Linear)])

    def clipped_sum(self, x: torch.Tensor, y: torch.Tensor, max_norm: float,
                    keep: KeptViews | None = None) -> torch.Tensor | None:
        """Σ_b clip_C(g_b ∘ keep) into `self.total` [d] (overwritten; `keep` the kept coordinates, `kept_views`,
        None: all) for a non-empty batch (x, y) of one device, and returns the losses [B]; None as
        `per_sample`. What `per_sample` followed by `PerSample.clipped_sum` computes (Opacus's clipping factor
        min(1, C / (‖g_b‖ + 1e-6))), in fewer tensor calls (93 profiler events a 28x28 LeNet-5 step against 157):
        two-dimensional matrix products straight into the result's views, the convolutions' per-sample gradients in
        buffers kept from step to step (`conv_per_sample.Scratch`). Each call
        releases Python's GIL, and with a device per thread (`device_threads.py`) the other thread then takes it,
        so on two cores the calls, not the arithmetic, made a DP-SGD step 1.7x a plain one
        (benchmarks/dp_sgd_cost.py)."""
        b = len(y)
        scratch = self.scratch.batch(b)
        found = self._output_grads(x, y, scratch.ones)
        if found is None:
            return None
        losses, outputs = found
        with torch.no_grad():
            self.scratch.convolutions(scratch, [r[0][0] for r in self.records], outputs)
            total: torch.Tensor | None = None
            for k, buffer in enumerate(scratch.buffers):
                if keep is not None:
                    buffer.mul_(keep.runs[k])
                sq = torch.linalg.vecdot(buffer, buffer)
                total = sq if total is None else total.add_(sq)
            linear = [(go, record[0][0]) for (layer, _, _), record, go
                      in zip(self.layers, self.records, outputs, strict=True) if isinstance(layer, nn.Linear)]
            for k, (go, h) in enumerate(linear):
                if keep is None:
                    sq = torch.linalg.vecdot(go, go)
                    sq_in = torch.linalg.vecdot(h, h)
                    part = sq.mul_(sq_in.add_(1.0) if self.linear_sums[k][1] is not None else sq_in)
                else:  # Σ_jk keep_jk l_j² r_k² (`outer_sq_norms`) and the kept bias entries' l_j²
                    go_sq, (weight_keep, bias_keep) = go * go, keep.linear[k]
                    part = torch.linalg.vecdot(torch.mm(go_sq, weight_keep), h * h)
                    if bias_keep is not None:
                        part.add_(torch.mv(go_sq, bias_keep))
                total = part if total is None else total.add_(part)
            assert total is not None, "no per-sample gradients"
            factors = torch.div(max_norm, total.sqrt_().add_(1e-6)).clamp_max_(1.0)
            for k, transposed in enumerate(scratch.transposed):
                torch.mv(transposed, factors, out=self.run_sums[k])
            for (go, h), (weight_sum, bias_sum) in zip(linear, self.linear_sums, strict=True):
                go_t = go.t()
                torch.mm(go_t * factors, h, out=weight_sum)
                if bias_sum is not None:
                    torch.mv(go_t, factors, out=bias_sum)
        return losses

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[PerSample, torch.Tensor] | None:
        """Per-sample gradients ([1, B, ·] parts) and losses [B] of the module on (x, y); None when a layer ran
        other than once, its output was changed in place or a linear layer saw more than [B, in] (the caller then
        falls back to `functional_per_sample`)."""
        found = self._output_grads(x, y)
        if found is None:
            return None
        losses, outputs = found
        with torch.no_grad():
            return self._per_sample(losses, outputs)

    def _per_sample(self, losses: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> tuple[PerSample, torch.Tensor]:
        b = len(losses)
        buffers = [torch.empty(b, run.stop - run.start) for run in self.runs]
        grads = PerSample(self.dim, [(run, buffer[None]) for run, buffer in zip(self.runs, buffers, strict=True)])

        def store(coords: slice, g: torch.Tensor) -> None:
            k, columns = self.targets[coords.start]
            buffers[k][:, columns].view(g.shape).copy_(g)

        for (layer, weight, bias), record, go in zip(self.layers, self.records, outputs, strict=True):
            if isinstance(layer, nn.Conv2d):
                store(weight, conv_per_sample(layer, record[0][0], go))
                if bias is not None:
                    store(bias, go.sum((2, 3)))
            else:
                grads.outer.append((weight, bias, go[None], record[0][0].detach()[None]))  # used outside no_grad
        return grads, losses


def functional_per_sample(model: FlatModel, params: torch.Tensor, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[PerSample, torch.Tensor]:
    """Per-sample gradients [M, B, d] and losses [M, B] of rows `params` [M, d] on x [M, B, ...], y [M, B], with
    `torch.func`: vmap over devices of vmap over samples of the gradient of one sample's loss."""
    def loss(p: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model.forward(p, xi[None]), yi[None])

    g, losses = vmap(vmap(grad_and_value(loss), in_dims=(None, 0, 0)))(params, x, y)
    return PerSample(model.dim, [(slice(0, model.dim), g)]), losses


__all__ = ["KeptViews", "LayerTaps", "functional_per_sample", "taps_cover"]
