"""Local training and evaluation of devices through views of the parameter bank.

Two interchangeable trainers implement `train_all` / `evaluate_all`:

* `SequentialTrainer` trains one device after another, each through `functional_call` on a copy of its row;
* `BatchedTrainer` trains many devices in lockstep with `torch.func.vmap` over the stacked bank: one batched
  forward/backward for M devices instead of M small ones, which pays off for small models.

Both follow the same rule per step: gradient of the mean cross-entropy on the device's minibatch, plus the
algorithm's penalty gradient (λ·∇h_i, neighbours held fixed), plus weight decay, masked (pruned coordinates get no
gradient and, being zero, stay exactly zero), optional momentum, then x ← x − lr·g.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import grad_and_value, vmap

from fedge.data.federated import DeviceData
from fedge.experiment import TrainConfig
from fedge.models.flat import FlatModel

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_plan(sizes: list[int], epochs: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """[M, S, B] local sample indices of each device's minibatches for one round, -1 where padded.

    Device i gets `epochs` shuffled passes over its n_i samples in batches of B; devices with fewer steps than the
    longest are padded with empty (all -1) steps.
    """
    plans = []
    for n in sizes:
        steps = []
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            pad = (-n) % batch_size
            steps.append(torch.cat([order, torch.full((pad,), -1, dtype=torch.long)]).view(-1, batch_size))
        plans.append(torch.cat(steps))
    longest = max(p.shape[0] for p in plans)
    out = torch.full((len(sizes), longest, batch_size), -1, dtype=torch.long)
    for i, plan in enumerate(plans):
        out[i, : plan.shape[0]] = plan
    return out


class _Stacked:
    """All devices' samples of one split concatenated, with per-device offsets, for gathered minibatches."""

    def __init__(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
        self.sizes = [len(y) for y in ys]
        self.offsets = torch.tensor([0] + self.sizes[:-1]).cumsum(0)
        self.x = torch.cat(xs) if xs else torch.empty(0)
        self.y = torch.cat(ys) if ys else torch.empty(0, dtype=torch.long)

    def gather(self, devices: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, ...]:
        valid = local >= 0
        index = (self.offsets[devices][:, None] + local.clamp_min(0)).clamp_max(max(len(self.y) - 1, 0))
        return self.x[index], self.y[index], valid


class _Base:
    def __init__(self, model: FlatModel, devices: list[DeviceData], cfg: TrainConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.train_data = _Stacked([d.x_train for d in devices], [d.y_train for d in devices])
        self.splits = {
            "val": _Stacked([d.x_val for d in devices], [d.y_val for d in devices]),
            "test": _Stacked([d.x_test for d in devices], [d.y_test for d in devices]),
        }

    def _loss(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(self.model.forward(params, x), y, reduction="none")
        return (losses * w).sum() / w.sum().clamp_min(1.0)

    def _apply(self, params: torch.Tensor, grad: torch.Tensor, keep: torch.Tensor, devices: torch.Tensor,
               penalty: Penalty | None, momentum: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One SGD step for rows `devices`: returns (new params, new momentum buffers)."""
        if penalty is not None:
            grad = grad + penalty(params, devices)
        if self.cfg.weight_decay:
            grad = grad + self.cfg.weight_decay * params
        grad = grad * keep
        if momentum is not None:
            momentum = self.cfg.momentum * momentum + grad
            grad = momentum
        return params - self.cfg.lr * grad, momentum

    @torch.no_grad()
    def evaluate_all(self, bank: torch.Tensor, split: str = "test", chunk: int = 256,
                     block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(accuracy [N], mean cross-entropy [N]) of every device's row on its own `split`; NaN where empty."""
        data = self.splits[split]
        n = bank.shape[0]
        correct, loss_sum = torch.zeros(n), torch.zeros(n)
        sizes = torch.tensor(data.sizes, dtype=torch.float32)
        forward = vmap(self.model.forward)
        for start in range(0, n, chunk):
            devices = torch.arange(start, min(start + chunk, n))
            longest = int(sizes[devices].max()) if len(devices) else 0
            for first in range(0, longest, block):
                local = torch.arange(first, min(first + block, longest)).expand(len(devices), -1)
                local = torch.where(local < sizes[devices, None].long(), local, torch.full_like(local, -1))
                x, y, valid = data.gather(devices, local)
                logits = forward(bank[devices], x)
                hits = (logits.argmax(dim=2) == y) & valid
                ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y) * valid
                correct[devices] += hits.sum(dim=1).float()
                loss_sum[devices] += ce.sum(dim=1)
        empty = sizes == 0
        acc = torch.where(empty, torch.full_like(sizes, float("nan")), correct / sizes.clamp_min(1))
        loss = torch.where(empty, torch.full_like(sizes, float("nan")), loss_sum / sizes.clamp_min(1))
        return acc, loss


class SequentialTrainer(_Base):
    """One device at a time: the reference implementation, and the fast one for large models."""

    def train_all(self, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generator: torch.Generator) -> torch.Tensor:
        plan = batch_plan([self.train_data.sizes[i] for i in devices.tolist()], self.cfg.epochs,
                          self.cfg.batch_size, generator)
        losses = torch.zeros(len(devices))
        for row, device in enumerate(devices.tolist()):
            x = bank[device].clone()
            keep = masks[device].to(x.dtype)
            ids = torch.tensor([device])
            total, steps = 0.0, 0
            for local in plan[row]:
                local = local[local >= 0]
                if len(local) == 0:
                    continue
                xb, yb, _ = self.train_data.gather(ids, local[None, :])
                x.requires_grad_(True)
                loss = self._loss(x, xb[0], yb[0], torch.ones(len(local)))
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    buf = momentum[device][None] if momentum is not None else None
                    new, buf = self._apply(x.detach()[None], grad[None], keep[None], ids, penalty, buf)
                    x = new[0]
                    if momentum is not None and buf is not None:
                        momentum[device] = buf[0]
                total += float(loss.detach())
                steps += 1
            bank[device] = x.detach()
            losses[row] = total / max(steps, 1)
        return losses


class BatchedTrainer(_Base):
    """Many devices in lockstep through `vmap(grad)` over the stacked bank (chunks of `chunk` devices)."""

    def __init__(self, model: FlatModel, devices: list[DeviceData], cfg: TrainConfig, chunk: int = 1024) -> None:
        super().__init__(model, devices, cfg)
        self.chunk = chunk
        self._grad = vmap(grad_and_value(self._loss))

    def train_all(self, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generator: torch.Generator) -> torch.Tensor:
        plan = batch_plan([self.train_data.sizes[i] for i in devices.tolist()], self.cfg.epochs,
                          self.cfg.batch_size, generator)
        losses = torch.zeros(len(devices))
        for start in range(0, len(devices), self.chunk):
            rows = torch.arange(start, min(start + self.chunk, len(devices)))
            ids = devices[rows]
            x = bank[ids].clone()
            keep = masks[ids].to(x.dtype)
            buf = momentum[ids].clone() if momentum is not None else None
            total, steps = torch.zeros(len(ids)), torch.zeros(len(ids))
            for step in range(plan.shape[1]):
                local = plan[rows, step]
                active = (local >= 0).any(dim=1)
                sub = active.nonzero().flatten()
                if len(sub) == 0:
                    continue
                full = len(sub) == len(ids)  # devices whose batches ran out sit the step out (no padded work)
                xb, yb, valid = self.train_data.gather(ids[sub], local[sub])
                params = x if full else x[sub]
                grad, loss = self._grad(params, xb, yb, valid.to(x.dtype))
                with torch.no_grad():
                    new, new_buf = self._apply(params, grad, keep if full else keep[sub], ids[sub], penalty,
                                               None if buf is None else (buf if full else buf[sub]))
                    if full:
                        x = new
                        buf = new_buf
                    else:
                        x[sub] = new
                        if buf is not None and new_buf is not None:
                            buf[sub] = new_buf
                total[sub] += loss.detach()
                steps[sub] += 1
            bank[ids] = x
            if momentum is not None and buf is not None:
                momentum[ids] = buf
            losses[rows] = total / steps.clamp_min(1)
        return losses


def make_trainer(model: FlatModel, devices: list[DeviceData], cfg: TrainConfig) -> SequentialTrainer | BatchedTrainer:
    """`batched: auto` picks vmap batching for models under 200k parameters (measured in benchmarks/)."""
    small = model.dim < 200_000
    if cfg.threads or small:
        torch.set_num_threads(cfg.threads or 1)
    batched = cfg.batched == "on" or (cfg.batched == "auto" and small)
    return BatchedTrainer(model, devices, cfg) if batched else SequentialTrainer(model, devices, cfg)
