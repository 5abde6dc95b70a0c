"""Measurements behind DPMN's defaults (docs/dpmn.md): the distances the regularizer sees in training, and how well
each similarity choice separates devices that share a class from devices that do not.

    python -m benchmarks.dpmn_calibration [--rounds 10] [--set key=value ...]

Prints, per round: quantiles of z (mean squared difference on the overlap) over neighbour pairs, and for three
candidate similarity inputs (raw weights, updates on all parameters, updates on the classifier head) the mean
cosine over pairs sharing a class vs pairs sharing none, and the AUC of separating them.
"""

from __future__ import annotations

import argparse

import torch

from fedge.config import apply_overrides, build
from fedge.core.regularizer import pair_terms
from fedge.core.similarity import overlap_cosine, squared_distances
from fedge.experiment import ExperimentConfig
from fedge.runtimes.simulator import Simulation


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Probability that a random positive pair scores above a random negative pair."""
    return float((positive[:, None] > negative[None, :]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = build(ExperimentConfig, apply_overrides({"rounds": args.rounds}, args.overrides))
    sim = Simulation.build(config, "dpmn")
    ctx, state = sim.ctx, sim.fed.devices
    labels = sim.setup.data.label_sets()
    n = config.data.devices
    share = torch.tensor([[bool(labels[i] & labels[j]) for j in range(n)] for i in range(n)])
    off = ~torch.eye(n, dtype=torch.bool)
    pos, neg = share & off, ~share & off
    h0, h1 = ctx.head
    print("round  z_p10     z_median  z_p90    | similarity: mean cos share/no-share (AUC)")
    for _ in range(config.rounds):
        metrics = sim.step()
        state, inbox = sim.fed.devices, sim.fed.inbox
        zs = []
        for i in range(n):
            got = torch.nonzero(inbox.receivers == i).flatten()
            if len(got):
                overlap = state.masks[i][None] & inbox.masks(got)
                zs.append(pair_terms(state.bank[i], inbox.values(got), overlap)[1])
        z = torch.cat(zs) if zs else torch.zeros(1)
        q = torch.quantile(z, torch.tensor([0.1, 0.5, 0.9]))
        updates = state.updates()
        parts = {
            "weights": overlap_cosine(state.bank, state.masks),
            "updates-all": overlap_cosine(updates, state.masks),
            "updates-head": overlap_cosine(updates[:, h0:h1], state.masks[:, h0:h1]),
        }
        overlap_size = state.masks.float() @ state.masks.float().T
        z_all = squared_distances(state.bank, state.masks) / overlap_size.clamp_min(1)
        zq = f"z share/no-share median {float(z_all[pos].median()):.1e}/{float(z_all[neg].median()):.1e}"
        text = zq + "  " + "  ".join(
            f"{k}: {float(v[pos].mean()):+.2f}/{float(v[neg].mean()):+.2f} ({auc(v[pos], v[neg]):.2f})"
            for k, v in parts.items())
        print(f"{metrics['round']:>5}  {q[0]:.2e}  {q[1]:.2e}  {q[2]:.2e} | {text}  acc={metrics['accuracy_mean']:.3f}")


if __name__ == "__main__":
    main()
