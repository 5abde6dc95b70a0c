"""Server optimisers on the averaged client deltas (FedOpt: Reddi et al., "Adaptive Federated Optimization", 2021).

The server treats the round's averaged delta Δ (each item averaged over the clients that touched it, dense tensors
over all clients) as a pseudo-gradient step and feeds it to an optimiser:

* `sgd`: x += η·Δ, with optional heavy-ball momentum (FedAvgM, Hsu et al. 2019). η = 1, momentum 0 is plain
  averaging (FedAvg).
* `adagrad` / `adam` / `yogi`: FedAdagrad / FedAdam / FedYogi of Reddi et al. (Algorithm 2, no bias correction,
  adaptivity τ = `eps`): m = β1·m + (1-β1)·Δ; v updated from Δ²; x += η·m / (√v + τ).

Item rows are updated *lazily*: only rows some client uploaded this round (count > 0) touch their moments and move,
so an item nobody used keeps its value and its optimiser state (like sparse Adam). The dense tensors are updated
every round. Per-coordinate adaptivity matters here because items are averaged over very different numbers of
contributors (a popular item's mean delta shrinks where its clients disagree, a rare item's does not).
"""

from __future__ import annotations

import torch


class ServerOptimizer:
    """One optimiser for one shared model (`{"item": [I, d], dense...}`); state is created on first use."""

    def __init__(self, kind: str, lr: float, momentum: float = 0.0, beta1: float = 0.9, beta2: float = 0.99,
                 eps: float = 1e-3) -> None:
        self.kind = kind
        self.lr = lr
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def step(self, shared: dict[str, torch.Tensor], item_delta: torch.Tensor, item_count: torch.Tensor,
             dense_delta: dict[str, torch.Tensor]) -> None:
        """Apply the round's averaged deltas to `shared` in place."""
        rows = torch.nonzero(item_count > 0).flatten()
        self._update("item", shared["item"], item_delta, rows)
        for name, delta in dense_delta.items():
            self._update(name, shared[name], delta, None)

    def _update(self, name: str, param: torch.Tensor, delta: torch.Tensor, rows: torch.Tensor | None) -> None:
        if self.kind == "sgd" and self.momentum == 0.0:
            if rows is None:
                param.add_(delta, alpha=self.lr)
            else:
                param[rows] += self.lr * delta[rows]
            return
        if name not in self.m:
            self.m[name] = torch.zeros_like(param)
            self.v[name] = torch.zeros_like(param)
        m_all, v_all = self.m[name], self.v[name]
        d = delta if rows is None else delta[rows]
        m = m_all if rows is None else m_all[rows]
        v = v_all if rows is None else v_all[rows]
        if self.kind == "sgd":  # FedAvgM: heavy-ball momentum on the pseudo-gradient
            m = self.momentum * m + d
            step = m
        else:
            m = self.beta1 * m + (1 - self.beta1) * d
            sq = d * d
            if self.kind == "adagrad":
                v = v + sq
            elif self.kind == "adam":
                v = self.beta2 * v + (1 - self.beta2) * sq
            else:  # yogi
                v = v - (1 - self.beta2) * sq * torch.sign(v - sq)
            step = m / (v.sqrt() + self.eps)
        if rows is None:
            m_all.copy_(m)
            v_all.copy_(v)
            param.add_(step, alpha=self.lr)
        else:
            m_all[rows] = m
            v_all[rows] = v
            param[rows] += self.lr * step


__all__ = ["ServerOptimizer"]
