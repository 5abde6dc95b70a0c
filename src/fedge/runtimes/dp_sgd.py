"""Record-level DP-SGD on every device (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016).

One local step of device i, in both trainers (`train_all(..., dp=DPSGD(σ, C))`):

1. Poisson sampling: each of its n_i samples is taken independently with probability q_i (`batches.poisson_plan`,
   from the device's own generator, drawn up front for the round; an empty batch is a valid step), q_i and the
   step count as Opacus's `DPDataLoader` over batches of B (`dp_sgd_schedule`): what the accountant assumes;
2. per-sample gradients of the cross-entropy, restricted to the kept (unpruned) coordinates, each clipped to L2
   norm C (Opacus's factor min(1, C / (‖g‖ + 1e-6))) and summed;
3. N(0, σ²C²) on the kept coordinates, one draw per parameter tensor in the module's order as Opacus's
   `DPOptimizer` draws it (`fedge.core.privacy.Noise`); pruned coordinates get none and stay zero;
4. divided by the expected batch size (`expected_batch_sizes`; Opacus's `loss_reduction="mean"`);

then the algorithm's penalty, weight decay, momentum and the SGD step exactly as without DP: they read no private
data, so they come after the noise.

Per-sample gradients, each equal to Opacus's `GradSampleModule` ones (tests/runtimes/test_dp_sgd.py):

* Linear/Conv2d models device by device (`LayerTaps`): forward hooks record each layer's input and output, one
  backward pass gives the gradients with respect to the outputs; a linear layer's per-sample weight gradient is the
  outer product ∂z_b h_bᵀ, clipped and summed without being formed (Goodfellow 2015), a convolution's is
  ∂z_b unfold(h_b)ᵀ (Opacus's unfolding) or one convolution grouped by sample. This is what brings a LeNet-5 step
  near Opacus's 1.6x a plain step; `vmap` over samples costs 6x there (benchmarks/dp_sgd_cost.py);
* Linear/ReLU stacks in the batched trainer: the hand-written backward, factored (`dense_stack.dense_per_sample`);
* anything else: `torch.func.vmap(grad_and_value(...))` over samples, and over devices on the bank's rows.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from fedge.config import ConfigError
from fedge.core.privacy import Noise, PerSample, gaussian_mechanism
from fedge.models.flat import FlatModel
from fedge.runtimes.batches import dp_sgd_schedule, expected_batch_sizes, poisson_plan
from fedge.runtimes.dense_stack import dense_per_sample
from fedge.runtimes.device_threads import Replica, for_each_on_threads

if TYPE_CHECKING:
    from fedge.runtimes.trainer import BatchedTrainer, Penalty, SequentialTrainer


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD settings of a round: noise multiplier σ and clipping norm C (None: no clipping, C = ∞)."""

    noise_multiplier: float
    max_grad_norm: float | None

    def __post_init__(self) -> None:
        if self.noise_multiplier < 0:
            raise ValueError(f"DP-SGD noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"DP-SGD clipping norm must be > 0, got {self.max_grad_norm}")
        if self.max_grad_norm is None and self.noise_multiplier > 0:
            raise ValueError("DP-SGD without clipping has unbounded sensitivity: noise needs a clipping norm")

    @property
    def identity(self) -> bool:
        """σ = 0 and C = ∞: no clipping and no noise, so ε = ∞ whatever the sampling and the mechanism is plain SGD;
        the trainers then take their ordinary path (bit for bit the results without DP)."""
        return self.noise_multiplier == 0 and self.max_grad_norm is None

    @property
    def std(self) -> float:
        """σ·C, the noise's standard deviation on the sum of clipped gradients."""
        return self.noise_multiplier * self.max_grad_norm if self.max_grad_norm is not None else 0.0


def needs_dp_path(dp: DPSGD, model: FlatModel, name: str) -> bool:
    """Whether a trainer given `dp` must take the DP-SGD path (not for the identity); refuses batch normalisation
    (one sample's gradient then depends on the others, so per-sample gradients and their clipping mean nothing;
    Opacus replaces BatchNorm by GroupNorm) whatever σ and C, as the config would."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.module.modules()):
        raise ConfigError(f"privacy.mechanism: dp-sgd cannot train {name}: it has batch normalisation")
    return not dp.identity


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

    Per-sample gradients come out as: linear weights factored (∂z_b, h_b); every other parameter (convolutions,
    biases) materialised in [B, n] buffers, one per run of consecutive such coordinates of the flat layout. Forming
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
        self.runs: list[slice] = []  # the coordinates outside linear weights, as maximal runs
        start = 0
        for w in sorted((w for layer, w, _ in self.layers if isinstance(layer, nn.Linear)), key=lambda w: w.start):
            if w.start > start:
                self.runs.append(slice(start, w.start))
            start = w.stop
        if start < self.dim:
            self.runs.append(slice(start, self.dim))
        self.targets: dict[int, tuple[int, slice]] = {}  # parameter start -> (run, columns in the run's buffer)
        for k, run in enumerate(self.runs):
            for layer, w, b in self.layers:
                for coords in ((b,) if isinstance(layer, nn.Linear) else (w, b)):
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
                go = go.sum((2, 3))
            else:
                grads.outer.append((weight, go[None], record[0][0][None]))
            if bias is not None:
                store(bias, go)
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


def private_gradient(grads: PerSample, valid: torch.Tensor, keep: torch.Tensor | None, dp: DPSGD,
                     expected: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """(Σ_b clip_C(g_b ∘ keep) + noise ∘ keep) / expected [M, d]: the Gaussian mechanism on the clipped sum
    (`PerSample.clipped_sum`; `valid` [M, B] zeroes padding, `keep` [M, d] the kept coordinates, None: all), divided
    by the expected batch size. `noise` [M, d] is already scaled by σC; None for σ = 0 (no draw, as Opacus)."""
    return gaussian_mechanism(grads.clipped_sum(dp.max_grad_norm, valid, keep), 1.0, noise, keep) / expected[:, None]


def sequential_step(trainer: SequentialTrainer, replica: Replica, taps: LayerTaps | None, x: torch.Tensor,
                    y: torch.Tensor, keep: torch.Tensor | None, ids: torch.Tensor, penalty: Penalty | None,
                    buf: torch.Tensor | None, dp: DPSGD, expected: torch.Tensor, noise: Noise,
                    generator: torch.Generator) -> tuple[float, int]:
    """One DP-SGD step of one device on the batch (x, y), in place on `replica.work` (and `buf`); `keep` [d] its
    mask (None: nothing pruned), `expected` [1] its expected batch size, `noise` a one-row buffer. Returns (sum of
    the batch's losses, batch size)."""
    work, model = replica.work, trainer.model
    grads, losses, valid = PerSample(model.dim), torch.zeros(0), torch.ones(1, len(y))
    if len(y):
        found = taps.per_sample(x, y) if taps is not None else None
        grads, losses = found if found is not None else functional_per_sample(model, work[None], x[None], y[None])
    if dp.std > 0:
        noise.draw(0, dp.std, generator)
    mask = None if keep is None else keep[None]
    grad = private_gradient(grads, valid, mask, dp, expected, noise.values if dp.std > 0 else None)[0]
    with torch.no_grad():
        trainer._step(work, grad, None if keep is None else keep.to(work.dtype), ids, penalty, buf)
    return float(losses.sum()), len(y)


def train_sequential(trainer: SequentialTrainer, bank: torch.Tensor, masks: torch.Tensor,
                     momentum: torch.Tensor | None, devices: torch.Tensor, penalty: Penalty | None,
                     generators: list[torch.Generator], dp: DPSGD) -> torch.Tensor:
    """`SequentialTrainer.train_all` with DP-SGD: returns each device's mean loss over the samples it drew."""
    sizes = [trainer.train_data.sizes[i] for i in devices.tolist()]
    rates, steps = dp_sgd_schedule(sizes, trainer.cfg.epochs, trainer.cfg.batch_size)
    plan = poisson_plan(sizes, steps.tolist(), rates.tolist(), generators)
    expected = expected_batch_sizes(sizes, trainer.cfg.batch_size)
    data, offsets = trainer.train_data, trainer.train_data.offsets.tolist()
    tapped = taps_cover(trainer.model)
    losses = torch.zeros(len(devices))
    helpers: dict[int, tuple[LayerTaps | None, Noise]] = {}  # per replica (one thread at a time uses each)

    def train(replica: Replica, job: tuple[int, int]) -> None:
        row, device = job
        replica.work.copy_(bank[device])
        keep = None if bool(masks[device].all()) else masks[device]
        buf = momentum[device].clone() if momentum is not None else None
        if id(replica) not in helpers:
            helpers[id(replica)] = (LayerTaps(replica.module, trainer.model) if tapped else None,
                                    Noise(trainer.model.slices, 1))
        (taps, noise), ids = helpers[id(replica)], torch.tensor([device])
        total, count = 0.0, 0
        with taps.active() if taps is not None else contextlib.nullcontext():
            for step in range(int(steps[row])):
                index = plan.batch(row, step) + offsets[device]
                loss, taken = sequential_step(trainer, replica, taps, data.x[index], data.y[index], keep, ids,
                                              penalty, buf, dp, expected[row:row + 1], noise, generators[row])
                total, count = total + loss, count + taken
        bank[device] = replica.work
        if momentum is not None and buf is not None:
            momentum[device] = buf
        losses[row] = total / max(count, 1)

    for_each_on_threads(list(enumerate(devices.tolist())), train, trainer.replicas)
    return losses


def train_batched(trainer: BatchedTrainer, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generators: list[torch.Generator],
                  dp: DPSGD) -> torch.Tensor:
    """`BatchedTrainer.train_all` with DP-SGD, devices in lockstep: each step takes every active device's
    Poisson-sampled batch (padded to the longest), computes all per-sample gradients at once (vmap over devices and
    samples, or the dense-stack backward) and draws each device's noise from its own generator. Returns mean losses
    over the samples drawn. Without the dense-stack kernels the per-sample gradients [M, B, d] bound the chunk to
    about 256 MB."""
    sizes = [trainer.train_data.sizes[i] for i in devices.tolist()]
    rates, steps = dp_sgd_schedule(sizes, trainer.cfg.epochs, trainer.cfg.batch_size)
    plan = poisson_plan(sizes, steps.tolist(), rates.tolist(), generators)
    expected = expected_batch_sizes(sizes, trainer.cfg.batch_size)
    model, layers = trainer.model, trainer.layers
    chunk = trainer.chunk if layers is not None else max(
        1, min(trainer.chunk, (256 << 20) // (8 * model.dim * trainer.cfg.batch_size)))
    noise, kept = Noise(model.slices, 0), None

    def gradient(rows: torch.Tensor, ids: torch.Tensor, x: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal noise, kept
        if step == 0:  # a new chunk: every device with a step is active
            noise, kept = Noise(model.slices, len(rows)), masks[ids]
            kept = None if bool(kept.all()) else kept
        local = plan.padded(rows, step)
        grads, losses, valid = PerSample(model.dim), x.new_zeros(len(rows), 0), x.new_zeros(len(rows), 0)
        if local.shape[1]:
            xb, yb, taken = trainer.train_data.gather(ids, local)
            valid = taken.to(x.dtype)
            grads, losses = (dense_per_sample(layers, x, xb, yb) if layers is not None
                             else functional_per_sample(model, x, xb, yb))
        keep = None if kept is None else kept[:len(rows)]
        if dp.std > 0:
            for k, row in enumerate(rows.tolist()):
                noise.draw(k, dp.std, generators[row])
        grad = private_gradient(grads, valid, keep, dp, expected[rows], noise.values[:len(rows)] if dp.std else None)
        return grad, (losses * valid).sum(1), valid.sum(1)

    return trainer.lockstep(bank, masks, momentum, devices, penalty, steps, chunk, gradient)


__all__ = ["DPSGD", "LayerTaps", "dp_sgd_schedule", "expected_batch_sizes", "functional_per_sample", "needs_dp_path",
           "private_gradient", "sequential_step", "taps_cover", "train_batched", "train_sequential"]
