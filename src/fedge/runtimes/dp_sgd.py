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

Per-sample gradients, each equal to Opacus's `GradSampleModule` ones (tests/runtimes/test_dp_sgd.py;
`fedge.runtimes.per_sample`):

* Linear/Conv2d models device by device (`LayerTaps`): forward hooks record each layer's input and output, one
  backward pass gives the gradients with respect to the outputs; a linear layer's per-sample weight gradient is the
  outer product ∂z_b h_bᵀ, clipped and summed without being formed (Goodfellow 2015), a convolution's is
  ∂z_b unfold(h_b)ᵀ (Opacus's unfolding) or one convolution grouped by sample (`conv_per_sample`), and the step
  takes the clipped sum straight from `LayerTaps.clipped_sum`. This is what brings a 28x28 LeNet-5 step under
  Opacus's 1.6x a plain step; `vmap` over samples costs 6x there (benchmarks/dp_sgd_cost.py);
* Linear/ReLU stacks in the batched trainer: the hand-written backward, factored (`dense_stack.dense_per_sample`);
* anything else: `torch.func.vmap(grad_and_value(...))` over samples, and over devices on the bank's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fedge.config import ConfigError
from fedge.core.privacy import Noise, PerSample
from fedge.models.flat import FlatModel
from fedge.runtimes.batches import dp_sgd_schedule, expected_batch_sizes, gather_padded, poisson_plan
from fedge.runtimes.dense_stack import dense_per_sample
from fedge.runtimes.device_threads import Replica, for_each_on_threads
from fedge.runtimes.per_sample import KeptViews, LayerTaps, functional_per_sample, taps_cover

if TYPE_CHECKING:
    from fedge.runtimes.trainer import BatchedTrainer, Penalty, SequentialTrainer


GATHER_BYTES = 8 << 20  # the batched trainer gathers the padded batches of this many bytes of inputs at once


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


def private_gradient(grads: PerSample, valid: torch.Tensor | None, keep: torch.Tensor | None, dp: DPSGD,
                     expected: torch.Tensor, noise: torch.Tensor | None,
                     right_sq: Sequence[torch.Tensor | None] = ()) -> torch.Tensor:
    """(Σ_b clip_C(g_b ∘ keep) + noise ∘ keep) / expected [M, d]: the Gaussian mechanism on the clipped sum
    (`PerSample.clip_weights`, one batched matrix product per layer; `valid` [M, B] zeroes padding, None: every
    sample counts; `keep` [M, d] the kept coordinates, None: all), divided by the expected batch size. `noise`
    [M, d] is already scaled by σC; None for σ = 0 (no draw, as Opacus). The noise is added to the finished sum, so
    a device's result does not depend on how a matrix product accumulates (which can change with the batch of
    devices)."""
    if grads.full or grads.outer:
        out = grads.weighted_sum(grads.clip_weights(dp.max_grad_norm, valid, keep, right_sq))
    else:
        out = torch.zeros(len(expected), grads.dim)
    if noise is not None:
        out.add_(noise)
    if keep is not None:
        out.masked_fill_(~keep, 0.0)
    return out.div_(expected[:, None])


@dataclass(frozen=True)
class Kept:
    """A device's mask in the forms a DP-SGD step reads, made once per device instead of once per step: `mask` [d]
    (bool), `pruned` its complement, `weights` as 0/1 floats, and `views`, the per-layer views of `weights` that
    `LayerTaps.clipped_sum` takes (None without layer hooks)."""

    mask: torch.Tensor
    pruned: torch.Tensor
    weights: torch.Tensor
    views: KeptViews | None

    @classmethod
    def of(cls, mask: torch.Tensor, dtype: torch.dtype, taps: LayerTaps | None) -> Kept:
        weights = mask.to(dtype)
        return cls(mask, ~mask, weights, None if taps is None else taps.kept_views(weights))


def sequential_step(trainer: SequentialTrainer, replica: Replica, taps: LayerTaps | None, x: torch.Tensor,
                    y: torch.Tensor, kept: Kept | None, ids: torch.Tensor, penalty: Penalty | None,
                    buf: torch.Tensor | None, dp: DPSGD, expected: torch.Tensor, noise: Noise,
                    generator: torch.Generator) -> torch.Tensor:
    """One DP-SGD step of one device on the batch (x, y), in place on `replica.work` (and `buf`); `kept` its mask
    (None: nothing pruned), `expected` [1] its expected batch size, `noise` a one-row buffer. Returns the batch's
    losses [B]. With layer hooks the step takes `LayerTaps.clipped_sum`, which computes what `per_sample` and
    `private_gradient` do in fewer tensor calls; the general path is kept for the other models."""
    work, model = replica.work, trainer.model
    if dp.std > 0:
        noise.draw(0, dp.std, generator)
    assert dp.max_grad_norm is not None, "the DP-SGD path always clips (C = ∞ with σ = 0 is plain SGD)"
    losses = None
    if taps is not None and len(y):
        losses = taps.clipped_sum(x, y, dp.max_grad_norm, None if kept is None else kept.views)
    if losses is not None:  # Σ clip(g_b ∘ keep) is in taps.total: the rest of `private_gradient`, in place
        assert taps is not None
        grad = taps.total
        if dp.std > 0:
            grad.add_(noise.row)
        if kept is not None:
            grad.masked_fill_(kept.pruned, 0.0)
        grad.div_(expected)
    else:
        grads, losses = PerSample(model.dim), torch.zeros(0)
        if len(y):
            found = taps.per_sample(x, y) if taps is not None else None
            grads, losses = found if found is not None else functional_per_sample(model, work[None], x[None],
                                                                                   y[None])
        mask = None if kept is None else kept.mask[None]
        grad = private_gradient(grads, None, mask, dp, expected, noise.values if dp.std > 0 else None)[0]
    with torch.no_grad():
        trainer._step(work, grad, None if kept is None else kept.weights, ids, penalty, buf)
    return losses


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
    firsts, counts, starts, step_counts = (plan.first.tolist(), plan.size.tolist(), plan.start.tolist(),
                                           plan.steps.tolist())
    losses = torch.zeros(len(devices))
    helpers: dict[int, tuple[LayerTaps | None, Noise]] = {}  # per replica (one thread at a time uses each)

    def train(replica: Replica, job: tuple[int, int]) -> None:
        row, device = job
        replica.work.copy_(bank[device])
        buf = momentum[device].clone() if momentum is not None else None
        if id(replica) not in helpers:
            helpers[id(replica)] = (LayerTaps(replica.module, trainer.model) if tapped else None,
                                    Noise(trainer.model.slices, 1))
        (taps, noise), ids = helpers[id(replica)], torch.tensor([device])
        kept = None if bool(masks[device].all()) else Kept.of(masks[device], replica.work.dtype, taps)
        drawn: list[torch.Tensor] = []
        # the device's batches as slices of one tensor of stacked-data rows (index arithmetic once, not per step)
        first, last = firsts[starts[row]], firsts[starts[row]] + sum(counts[starts[row]:starts[row] + step_counts[row]])
        rows, scale = plan.samples[first:last] + offsets[device], expected[row:row + 1]
        with taps.active() if taps is not None else contextlib.nullcontext():
            for r in range(starts[row], starts[row] + step_counts[row]):
                index = rows[firsts[r] - first:firsts[r] - first + counts[r]]
                drawn.append(sequential_step(trainer, replica, taps, data.x[index], data.y[index], kept, ids,
                                             penalty, buf, dp, scale, noise, generators[row]))
        bank[device] = replica.work
        if momentum is not None and buf is not None:
            momentum[device] = buf
        losses[row] = float(torch.cat(drawn).sum()) / max(last - first, 1) if drawn else 0.0

    for_each_on_threads(list(enumerate(devices.tolist())), train, trainer.replicas)
    return losses


def train_batched(trainer: BatchedTrainer, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generators: list[torch.Generator],
                  dp: DPSGD) -> torch.Tensor:
    """`BatchedTrainer.train_all` with DP-SGD, devices in lockstep: each step takes every active device's
    Poisson-sampled batch (padded to the longest), computes all per-sample gradients at once (vmap over devices and
    samples, or the dense-stack backward) and adds each device's noise, drawn from its own generator.
    Returns mean losses over the samples drawn. Without the dense-stack kernels the per-sample gradients [M, B, d]
    bound the chunk to about 256 MB. The padded batches of a block of steps (about `GATHER_BYTES` of inputs) are
    gathered with one index, with, for the dense stack, the inputs' squared norms and the labels as one-hot, so a
    step costs about as many tensor operations as a plain one; none of this changes a number (the same operations
    on the same values), nor does the block size (tests/core/test_privacy_batched.py)."""
    sizes = [trainer.train_data.sizes[i] for i in devices.tolist()]
    rates, steps = dp_sgd_schedule(sizes, trainer.cfg.epochs, trainer.cfg.batch_size)
    plan = poisson_plan(sizes, steps.tolist(), rates.tolist(), generators)
    expected = expected_batch_sizes(sizes, trainer.cfg.batch_size)
    model, layers, data = trainer.model, trainer.layers, trainer.train_data
    chunk = trainer.chunk if layers is not None else max(
        1, min(trainer.chunk, (256 << 20) // (8 * model.dim * trainer.cfg.batch_size)))
    # every drawn sample's row in the stacked data (device offset + local index), so a step gathers with one index;
    # padded at the end so a padded batch's index never runs past it (padding rows get weight 0)
    step_rows = torch.repeat_interleave(torch.arange(len(sizes)), steps)
    sample_rows = torch.repeat_interleave(step_rows, plan.size)
    longest = int(plan.size.max()) if len(plan.size) else 0
    stacked = torch.cat([plan.samples + data.offsets[devices][sample_rows], torch.zeros(longest, dtype=torch.long)])
    tables: dict[str, torch.Tensor] = {}
    kept: torch.Tensor | None = None
    chunk_generators: list[torch.Generator] = []
    noise = Noise(model.slices, 0)
    batches: dict[int, tuple[torch.Tensor, ...]] = {}  # step -> its gathered batch, a block of steps at a time
    plan_rows: list[int] = []  # per step of the chunk: active devices, padded width
    plan_widths: list[int] = []
    row_bytes = data.x[0].numel() * data.x.element_size() if len(data.x) else 4

    def gather(step: int) -> None:
        """Gather the batches of steps `step` .. (about GATHER_BYTES of inputs) with one index (`gather_padded`);
        for the dense stack also each input's squared norm and its label as one-hot, for the steps' clipping."""
        stop, rows = step, 0
        while stop < len(plan_rows) and (stop == step or rows * row_bytes < GATHER_BYTES):
            rows, stop = rows + plan_rows[stop] * plan_widths[stop], stop + 1
        active, widths = plan_rows[step:stop], plan_widths[step:stop]
        xs, ys, valid = gather_padded(data.x, data.y, stacked, tables["first"][step:stop], tables["size"][step:stop],
                                      active, widths)
        counts = [m * w for m, w in zip(active, widths, strict=True)]
        parts: list[tuple[torch.Tensor, ...]] = [xs.split(counts), ys.split(counts), valid.split(counts)]
        if layers is not None:
            flat = xs.view(len(xs), -1)
            parts += [(flat * flat).sum(-1).split(counts),
                      F.one_hot(ys, layers[-1].out_features).to(xs.dtype).split(counts)]
        batches.clear()
        classes = layers[-1].out_features if layers is not None else 0
        for k, (m, w, *tensors) in enumerate(zip(active, widths, *parts)):
            shapes = [(m, w, *data.x.shape[1:]), (m, w), (m, w), (m, w), (m, w, classes)]
            batches[step + k] = tuple(t.view(shape) for t, shape in zip(tensors, shapes, strict=False))

    def gradient(rows: torch.Tensor, ids: torch.Tensor, x: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nonlocal kept, chunk_generators, noise, plan_rows, plan_widths
        m = len(rows)
        if step == 0:  # a new chunk, every device active: its whole schedule as [step, row] tables
            chunk_generators = [generators[row] for row in rows.tolist()]
            if dp.std > 0 and len(noise.values) < m:
                noise = Noise(model.slices, m)
            kept = masks[ids]
            kept = None if bool(kept.all()) else kept
            counts = steps[rows]
            span = torch.arange(int(counts.max()))[:, None]
            r = (plan.start[rows][None, :] + span).clamp_max_(max(len(plan.size) - 1, 0))
            size = torch.where(span < counts[None, :], plan.size[r] if len(plan.size) else r, 0)
            tables.update(first=plan.first[r] if len(plan.first) else r, size=size, count=size.to(x.dtype),
                          expected=expected[rows])
            plan_widths = size.max(dim=1).values.tolist()
            plan_rows = (span < counts[None, :]).sum(1).tolist()
            batches.clear()
        if step not in batches:
            gather(step)
        xb, yb, valid, *dense = batches.pop(step)
        # each active device's noise from its own generator, in one call (the rows still training are a prefix)
        out = noise.draw_rows(dp.std, chunk_generators[:m]) if dp.std > 0 else None
        keep = None if kept is None else kept[:m]
        count = tables["count"][step, :m]
        if not plan_widths[step]:
            return private_gradient(PerSample(model.dim), None, keep, dp, tables["expected"][:m], out), count, count
        if layers is not None:
            grads, losses = dense_per_sample(layers, x, xb, yb, dense[1])
            right_sq = [None] * (len(layers) - 1) + [dense[0]]  # the first layer's input norms, gathered
        else:
            (grads, losses), right_sq = functional_per_sample(model, x, xb, yb), []
        grad = private_gradient(grads, valid, keep, dp, tables["expected"][:m], out, right_sq)
        # the loss sum as a matrix product, as the gradient sums: the same bits whatever the padded width
        return grad, torch.bmm(valid.unsqueeze(1), losses.unsqueeze(2)).view(m), count

    return trainer.lockstep(bank, masks, momentum, devices, penalty, steps, chunk, gradient)


__all__ = ["DPSGD", "Kept", "LayerTaps", "dp_sgd_schedule", "expected_batch_sizes", "functional_per_sample",
           "needs_dp_path", "private_gradient", "sequential_step", "taps_cover", "train_batched", "train_sequential"]
