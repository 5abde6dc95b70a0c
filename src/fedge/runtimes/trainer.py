"""Local training and evaluation of devices through views of the parameter bank.

Two interchangeable trainers implement `train_all` / `evaluate_all`:

* `SequentialTrainer` trains one device after another, each through `functional_call` on a copy of its row;
* `BatchedTrainer` trains many devices in lockstep over the stacked bank: one batched forward/backward for M
  devices instead of M small ones, which pays off for small models. Linear/ReLU stacks (the MLP) use hand-written
  batched matrix products (`dense_stack.py`); other models `torch.func.vmap(grad(...))`.

Both follow the same rule per step: gradient of the mean cross-entropy on the device's minibatch, plus the
algorithm's penalty gradient (λ·∇h_i, neighbours held fixed), plus weight decay, masked (pruned coordinates get no
gradient and, being zero, stay exactly zero), optional momentum, then x ← x − lr·g. With `dp`, the gradient is
DP-SGD's (Abadi et al. 2016): Poisson-sampled batches, per-sample gradients clipped, noised (`dp_sgd.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import grad_and_value, vmap

from fedge.data.federated import DeviceData
from fedge.experiment import TrainConfig
from fedge.models.flat import FlatModel
from fedge.runtimes.batches import Stacked, batch_plan
from fedge.runtimes.dense_stack import dense_forward, dense_grad_and_loss, dense_layers
from fedge.runtimes.device_threads import Replica, available_cores, for_each_on_threads
from fedge.runtimes.dp_sgd import DPSGD, needs_dp_path, train_batched, train_sequential

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Gradient = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, object]]


def _selected(rows: torch.Tensor | None, n: int) -> torch.Tensor:
    """[n] bool: the rows to evaluate (all when None)."""
    chosen = torch.ones(n, dtype=torch.bool) if rows is None else torch.zeros(n, dtype=torch.bool)
    if rows is not None:
        chosen[rows] = True
    return chosen


def _only(result: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor | None,
          n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`result` with NaN outside `rows` (rows not evaluated have no accuracy)."""
    if rows is None:
        return result
    skipped = ~_selected(rows, n)
    return tuple(torch.where(skipped, torch.nan, value) for value in result)  # type: ignore[return-value]


class _Base:
    def __init__(self, model: FlatModel, devices: list[DeviceData], cfg: TrainConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.layers = dense_layers(model)  # Linear/ReLU stacks get hand-written batched kernels, else None
        self.train_data = Stacked([d.x_train for d in devices], [d.y_train for d in devices])
        self.splits = {
            "val": Stacked([d.x_val for d in devices], [d.y_val for d in devices]),
            "test": Stacked([d.x_test for d in devices], [d.y_test for d in devices]),
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
    def evaluate_all(self, bank: torch.Tensor, split: str = "test", chunk: int = 256, block: int = 256,
                     rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(accuracy [N], mean cross-entropy [N]) of every device's row on its own `split`; NaN where empty.
        `rows`: evaluate only these rows (the others are NaN)."""
        data = self.splits[split]
        n = bank.shape[0]
        correct, loss_sum = torch.zeros(n), torch.zeros(n)
        sizes = torch.tensor(data.sizes, dtype=torch.float32)
        forward = (functools.partial(dense_forward, self.layers) if self.layers is not None
                   else vmap(self.model.forward))
        # Largest first: a chunk then holds devices of similar size (heavy-tailed sizes waste little padding) and the
        # devices with samples left at offset `first` are a prefix of the chunk.
        order = torch.sort(sizes, descending=True, stable=True).indices
        if rows is not None:
            order = order[_selected(rows, n)[order]]
        n_evaluated = len(order)
        for start in range(0, n_evaluated, chunk):
            devices = order[start:start + chunk]
            counts = sizes[devices].long()
            longest = int(counts[0]) if len(devices) else 0
            for first in range(0, longest, block):
                active = int((counts > first).sum())
                ids = devices[:active]
                local = torch.arange(first, min(first + block, longest)).expand(active, -1)
                local = torch.where(local < counts[:active, None], local, torch.full_like(local, -1))
                x, y, valid = data.gather(ids, local)
                logits = forward(bank[ids], x)
                hits = (logits.argmax(dim=2) == y) & valid
                ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y) * valid
                correct[ids] += hits.sum(dim=1).float()
                loss_sum[ids] += ce.sum(dim=1)
        return _only(_per_sample(correct, loss_sum, sizes), rows, n)


class SequentialTrainer(_Base):
    """Device by device: the reference implementation, and the fast one for convolutional and large models.

    Each device trains through a `Replica` (a module copy whose parameters view one flat working buffer), so each
    step is a plain `module(x)` forward/backward, as in a hand-written PyTorch loop, followed by one SGD update on
    the flat vector. With `workers` > 1, that many devices train at once, one per thread (`device_threads.py`);
    the result does not depend on `workers`.
    """

    def __init__(self, model: FlatModel, devices: list[DeviceData], cfg: TrainConfig, workers: int = 1) -> None:
        super().__init__(model, devices, cfg)
        self.replicas = [Replica(model) for _ in range(max(1, workers))]

    def evaluate_all(self, bank: torch.Tensor, split: str = "test", chunk: int = 256, block: int = 256,
                     rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As `_Base.evaluate_all`, device by device through the plain module: for convolutional models this is
        about 2x faster than `vmap` (which turns the convolutions into grouped ones)."""
        data = self.splits[split]
        n = bank.shape[0]
        correct, loss_sum = torch.zeros(n), torch.zeros(n)
        offsets = data.offsets.tolist()

        def evaluate(replica: Replica, device: int) -> None:
            size = data.sizes[device]
            hits, total = 0.0, 0.0
            with torch.no_grad():  # grad mode is per thread: set it in the worker
                replica.work.copy_(bank[device])
                for first in range(0, size, block):
                    rows = slice(offsets[device] + first, offsets[device] + min(first + block, size))
                    logits = replica.module(data.x[rows])
                    hits += float((logits.argmax(dim=1) == data.y[rows]).sum())
                    total += float(F.cross_entropy(logits, data.y[rows], reduction="sum"))
            correct[device], loss_sum[device] = hits, total

        chosen = _selected(rows, n)
        for_each_on_threads([d for d in range(n) if data.sizes[d] > 0 and chosen[d]], evaluate, self.replicas)
        return _only(_per_sample(correct, loss_sum, torch.tensor(data.sizes, dtype=torch.float32)), rows, n)

    def _step(self, x: torch.Tensor, grad: torch.Tensor, keep: torch.Tensor | None, ids: torch.Tensor,
              penalty: Penalty | None, buf: torch.Tensor | None) -> None:
        """`_apply` for one device, in place on the flat vectors (keep None: nothing pruned). `grad` is the gradient
        buffer, rewritten by the next backward pass, so it is updated in place (no temporaries)."""
        if penalty is not None:
            grad.add_(penalty(x[None], ids)[0])
        if self.cfg.weight_decay:
            grad.add_(x, alpha=self.cfg.weight_decay)
        if keep is not None:
            grad.mul_(keep)
        if buf is not None:
            buf.mul_(self.cfg.momentum).add_(grad)
            grad = buf
        x.add_(grad, alpha=-self.cfg.lr)

    def train_all(self, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generators: list[torch.Generator],
                  dp: DPSGD | None = None) -> torch.Tensor:
        """Train rows `devices` in place; `generators[k]` shuffles device k's samples (and, with `dp`, Poisson-samples
        them and draws its noise: `dp_sgd.py`). Returns mean losses [M]."""
        if dp is not None and needs_dp_path(dp, self.model, self.cfg.model):
            return train_sequential(self, bank, masks, momentum, devices, penalty, generators, dp)
        plan = batch_plan([self.train_data.sizes[i] for i in devices.tolist()], self.cfg.epochs,
                          self.cfg.batch_size, generators)
        losses = torch.zeros(len(devices))
        data, offsets = self.train_data, self.train_data.offsets.tolist()

        def train(replica: Replica, job: tuple[int, int]) -> None:
            row, device = job
            work, grad = replica.work, replica.grad
            work.copy_(bank[device])
            keep = masks[device]
            dense = bool(keep.all())
            keep = keep.to(work.dtype)
            ids = torch.tensor([device])
            buf = momentum[device].clone() if momentum is not None else None
            total, steps = 0.0, 0
            for local in plan.device(row):
                local = local[local >= 0]
                index = local + offsets[device]
                grad.zero_()
                loss = F.cross_entropy(replica.module(data.x[index]), data.y[index])
                loss.backward()
                with torch.no_grad():
                    self._step(work, grad, None if dense else keep, ids, penalty, buf)
                total += float(loss.detach())
                steps += 1
            bank[device] = work
            if momentum is not None and buf is not None:
                momentum[device] = buf
            losses[row] = total / max(steps, 1)

        for_each_on_threads(list(enumerate(devices.tolist())), train, self.replicas)
        return losses


class BatchedTrainer(_Base):
    """Many devices in lockstep: batched gradients (hand-written for Linear/ReLU stacks, else `vmap(grad)`).

    Devices are ordered by their number of local steps (longest first) before being cut into chunks of `chunk`
    devices, so a chunk holds devices of similar size (Synthetic's sizes are heavy-tailed: unsorted, one large
    device makes its whole chunk wait) and the devices still training at step s are always a prefix of the chunk,
    taken by slicing instead of gathering. The order changes nothing in the result: each device's minibatches come
    from `batch_plan` in the caller's order.
    """

    def __init__(self, model: FlatModel, devices: list[DeviceData], cfg: TrainConfig, chunk: int = 0) -> None:
        super().__init__(model, devices, cfg)
        self.chunk = chunk or default_chunk(model)
        # Linear/ReLU stacks: hand-written batched matrix products (dense_stack.py); anything else: vmap(grad).
        self._grad = (functools.partial(dense_grad_and_loss, self.layers) if self.layers is not None
                      else vmap(grad_and_value(self._loss)))

    def train_all(self, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None,
                  devices: torch.Tensor, penalty: Penalty | None, generators: list[torch.Generator],
                  dp: DPSGD | None = None) -> torch.Tensor:
        """Train rows `devices` in place; `generators[k]` shuffles device k's samples (and, with `dp`, Poisson-samples
        them and draws its noise: `dp_sgd.py`). Returns mean losses [M]."""
        if dp is not None and needs_dp_path(dp, self.model, self.cfg.model):
            return train_batched(self, bank, masks, momentum, devices, penalty, generators, dp)
        plan = batch_plan([self.train_data.sizes[i] for i in devices.tolist()], self.cfg.epochs,
                          self.cfg.batch_size, generators)

        def gradient(rows: torch.Tensor, ids: torch.Tensor, x: torch.Tensor,
                     step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
            xb, yb, valid = self.train_data.gather(ids, plan.batches[plan.start[rows] + step])
            grad, loss = self._grad(x, xb, yb, valid.to(x.dtype))
            return grad, loss, 1.0

        return self.lockstep(bank, masks, momentum, devices, penalty, plan.steps, self.chunk, gradient)

    def lockstep(self, bank: torch.Tensor, masks: torch.Tensor, momentum: torch.Tensor | None, devices: torch.Tensor,
                 penalty: Penalty | None, step_counts: torch.Tensor, chunk: int, gradient: Gradient) -> torch.Tensor:
        """Train rows `devices` for `step_counts` steps each, `chunk` devices at a time; `gradient(rows, ids, x,
        step)` gives the active devices' (gradient, loss, loss weight) at `step` (`rows`: their positions in
        `devices`, `x`: their parameters). Returns each device's loss sum over its loss weight."""
        order = torch.sort(step_counts, descending=True, stable=True).indices
        losses = torch.zeros(len(devices))
        for start in range(0, len(devices), chunk):
            rows = order[start:start + chunk]
            ids = devices[rows]
            counts = step_counts[rows].tolist()
            x = bank[ids].clone()
            keep = masks[ids].to(x.dtype)
            buf = momentum[ids].clone() if momentum is not None else None
            total, weight = torch.zeros(len(ids)), torch.zeros(len(ids))
            active = len(ids)
            for step in range(counts[0] if counts else 0):
                while active > 0 and counts[active - 1] <= step:
                    active -= 1  # sorted: the devices still training are the first `active` rows
                grad, loss, taken = gradient(rows[:active], ids[:active], x[:active], step)
                with torch.no_grad():
                    new, new_buf = self._apply(x[:active], grad, keep[:active], ids[:active], penalty,
                                               None if buf is None else buf[:active])
                    if active == len(ids):
                        x = new
                        buf = new_buf
                    else:
                        x[:active] = new
                        if buf is not None and new_buf is not None:
                            buf[:active] = new_buf
                total[:active] += loss.detach()
                weight[:active] += taken
            bank[ids] = x
            if momentum is not None and buf is not None:
                momentum[ids] = buf
            losses[rows] = total / weight.clamp_min(1)
        return losses


def _per_sample(correct: torch.Tensor, loss_sum: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(accuracy, mean loss) per device from sums over its samples; NaN for devices without samples."""
    empty = sizes == 0
    acc = torch.where(empty, torch.full_like(sizes, float("nan")), correct / sizes.clamp_min(1))
    loss = torch.where(empty, torch.full_like(sizes, float("nan")), loss_sum / sizes.clamp_min(1))
    return acc, loss


def default_chunk(model: FlatModel) -> int:
    """Devices per vmap chunk: about 64 MB of parameters per chunk (1024 at most, 16 at least)."""
    return max(16, min(1024, (64 << 20) // (4 * model.dim)))


def choose_batched(model: FlatModel, cfg: TrainConfig) -> bool:
    """`batched: auto` -> batch devices with vmap when the model is small (under 200k parameters) and has no
    convolutions. Measured in benchmarks/ (docs/performance.md): vmap turns a batch of convolutions into one grouped
    convolution, which PyTorch's CPU kernels run slower than the separate ones, so LeNet-5 trains faster device by
    device; dense layers become batched matrix products, which is where batching pays (MLP at 1,000 Synthetic
    devices: about 4x, docs/performance.md)."""
    convolutional = any(len(s.shape) > 2 for s in model.slices)
    return cfg.batched == "on" or (cfg.batched == "auto" and model.dim < 200_000 and not convolutional)


def run_threads(model: FlatModel, cfg: TrainConfig) -> int:
    """torch intra-op threads a run of this model should use: `train.threads`, or one for models under 200k
    parameters (more only add synchronisation), else torch's current count. The runtime sets it around each round
    (`device_threads.intra_op_threads`) and restores the previous value afterwards."""
    return cfg.threads or (1 if model.dim < 200_000 else torch.get_num_threads())


def make_trainer(model: FlatModel, devices: list[DeviceData], cfg: TrainConfig) -> SequentialTrainer | BatchedTrainer:
    """The trainer `cfg.batched` asks for (see `choose_batched`).

    The sequential trainer trains `train.threads` devices at once (0 = auto: every core this process may use), one
    per thread with one intra-op thread each; measured on LeNet-5 this is about 1.5x faster than one device at a
    time on two intra-op threads (docs/performance.md). Everything else (the batched trainer, selection, pruning,
    mixing) runs on torch's intra-op threads (`intra_op_threads`).
    """
    if choose_batched(model, cfg):
        return BatchedTrainer(model, devices, cfg)
    return SequentialTrainer(model, devices, cfg, workers=cfg.threads or available_cores())
