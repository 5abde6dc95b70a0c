"""Recommendation models in functional form, so that many clients' private copies train as one batch.

A model is split into a *user* row (private: stays on the device), an *item* row per item (the item table, shared
through aggregation) and *dense* shared tensors (biases, MLP weights). `predict` takes one row of each per
interaction; a dense tensor either has a leading per-interaction dimension (each client's own copy, gathered by
client index) or not (one shared copy, as in centralized training).

* `MF`: matrix factorisation with an item bias and a global offset (Koren et al. 2009; federated by
  Ammad-ud-din et al. 2019 and Chai et al. 2020).
* `NeuMF`: GMF ⊕ MLP towers with a final linear layer (He et al. 2017; federated by Perifanis & Efraimidis 2022).
"""

from __future__ import annotations

import math

import torch


class Segments:
    """The examples of one step grouped by client, for per-client layers without gathering a weight per example.

    Clients are sorted by how many examples they have and cut into `buckets` groups of similar size; inside a
    group every client's examples are padded to the group's maximum, so a per-client linear layer is one `bmm`
    per group (a loop over a handful of groups, never over clients).
    """

    def __init__(self, client: torch.Tensor, num_clients: int, buckets: int = 8) -> None:
        self.client = client
        n = len(client)
        order = torch.argsort(client, stable=True)
        counts = torch.bincount(client, minlength=num_clients)
        starts = torch.cumsum(counts, 0) - counts
        present = torch.nonzero(counts > 0).flatten()
        by_size = present[torch.argsort(counts[present], stable=True)]
        self.groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for group in torch.tensor_split(by_size, min(buckets, max(len(by_size), 1))):
            if len(group) == 0:
                continue
            pos = torch.arange(int(counts[group].max()))
            valid = pos[None, :] < counts[group][:, None]
            rows = order[(starts[group][:, None] + pos[None, :]).clamp_max(max(n - 1, 0))]
            self.groups.append((group, rows, valid))

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Per-client tensor [B, ...] -> per-example [n, ...]."""
        return t[self.client]

    def matvec(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [n, a] times each example's client weight w [B, a, b] -> [n, b]."""
        rows_all, vals_all = [], []
        for group, rows, valid in self.groups:
            xb = x[rows] * valid.unsqueeze(2).to(x.dtype)
            yb = torch.bmm(xb, w[group])
            rows_all.append(rows[valid])
            vals_all.append(yb[valid])
        out = x.new_zeros(len(x), w.shape[2])
        return out.index_add(0, torch.cat(rows_all), torch.cat(vals_all)) if rows_all else out


class MF:
    """score = <p_u, q_i> + b_i + mu. Item rows hold [q_i, b_i]."""

    def __init__(self, dim: int, offset: float = 0.0) -> None:
        self.dim = dim
        self.offset = offset
        self.user_dim = dim
        self.item_dim = dim + 1

    def init_user(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.user_dim, generator=generator) * 0.1

    def init_shared(self, num_items: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        item = torch.randn(num_items, self.item_dim, generator=generator) * 0.1
        item[:, -1] = 0.0
        return {"item": item, "mu": torch.zeros(1)}

    def predict(self, user: torch.Tensor, item: torch.Tensor, dense: dict[str, torch.Tensor],
                seg: Segments | None = None) -> torch.Tensor:
        """Scores of examples; `dense` is shared (seg None) or per client [B, ...] grouped by `seg`."""
        mu = dense["mu"][0] if seg is None else seg.gather(dense["mu"])[:, 0]
        return (user * item[:, : self.dim]).sum(1) + item[:, self.dim] + mu + self.offset


class NeuMF:
    """score = h · [p^G_u ⊙ q^G_i, MLP([p^M_u, q^M_i])] + h_0. User/item rows hold [GMF part, MLP part]."""

    def __init__(self, dim: int, layers: list[int], offset: float = 0.0) -> None:
        self.dim = dim
        self.layers = list(layers)
        self.offset = offset
        self.user_dim = 2 * dim
        self.item_dim = 2 * dim

    def init_user(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.user_dim, generator=generator) * 0.1

    def init_shared(self, num_items: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        shared = {"item": torch.randn(num_items, self.item_dim, generator=generator) * 0.1}
        width = 2 * self.dim
        for n, out in enumerate(self.layers):
            bound = 1.0 / math.sqrt(width)
            shared[f"w{n}"] = (torch.rand(width, out, generator=generator) * 2 - 1) * bound
            shared[f"b{n}"] = torch.zeros(out)
            width = out
        bound = 1.0 / math.sqrt(self.dim + width)
        shared["h"] = (torch.rand(self.dim + width, generator=generator) * 2 - 1) * bound
        shared["h0"] = torch.zeros(1)
        return shared

    def predict(self, user: torch.Tensor, item: torch.Tensor, dense: dict[str, torch.Tensor],
                seg: Segments | None = None) -> torch.Tensor:
        """Scores of examples; `dense` is shared (seg None) or per client [B, ...] grouped by `seg`."""
        d = self.dim
        gmf = user[:, :d] * item[:, :d]
        x = torch.cat([user[:, d:], item[:, d:]], dim=1)
        for n in range(len(self.layers)):
            w, b = dense[f"w{n}"], dense[f"b{n}"]
            x = torch.relu(x @ w + b if seg is None else seg.matvec(x, w) + seg.gather(b))
        z = torch.cat([gmf, x], dim=1)
        if seg is None:
            return z @ dense["h"] + dense["h0"][0] + self.offset
        return (z * seg.gather(dense["h"])).sum(1) + seg.gather(dense["h0"])[:, 0] + self.offset


Model = MF | NeuMF


def make_model(kind: str, dim: int, layers: list[int], offset: float) -> Model:
    if kind == "mf":
        return MF(dim, offset)
    if kind == "neumf":
        return NeuMF(dim, layers, offset)
    raise ValueError(f"unknown model {kind!r}")


__all__ = ["MF", "Model", "NeuMF", "Segments", "make_model"]
