"""Checkpoint and resume for `fedge recsys` (`--checkpoint-every K`, `--resume DIR`), as `fedge run` has them.

A checkpoint (`DIR/checkpoint.pt`, `fedge.runfolder.checkfile`: atomic, checksummed, `weights_only` loading)
holds what the next round reads:

* the algorithm's `RecState`: the shared tensors (the server's model, or every edge's copy) and the devices'
  private user rows;
* what the algorithm keeps between rounds besides: the server optimiser's moments (fedmf, fedncf; one per edge for
  dfedmf, dfedncf), the centralized references' Adam state; an algorithm registered by a library that keeps state
  between rounds exposes it as `state_dict()` / `load_state_dict(d)`. fedmeta keeps none (stateless clients, a
  fresh local optimiser per round);
* the ledger (`fedge.messaging.Ledger.state_dict`), the per-round history, the byte totals and round times;
* the round validation selected so far and the (scoring) state it was measured with, which the run exports;
* under user-level DP (`fedge.recsys.dp`): σ, the clipping norm C as adaptive clipping left it, and the accountant's
  history, so a resumed run reports the same ε as an uninterrupted one;
* the config (and its hash, which leaves out `out_dir`, `progress`, `runtime` and `train.rounds`: a run may be
  moved, watched, resumed over another transport or extended) and the run id (summary.json's `run_id`).

No generator state: every random draw of a round comes from a named stream keyed by (seed, purpose, round, user)
(`fedge.recsys.draws`, `fedge.core.streams`), so round r draws the same numbers whether or not the process was
restarted before it; the data split and initialisation are redrawn from their streams and then overwritten.
Restoring copies the saved tensors *into* the freshly initialised ones, so everything that refers to them (the
server optimisers, keyed by their tensor; Adam's parameter list) stays attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fedge.runfolder.checkfile as checkfile
from fedge.config import ConfigError, to_dict
from fedge.recsys.algorithms.base import RecAlgorithm, RecState
from fedge.recsys.algorithms.centralized import Centralized
from fedge.recsys.algorithms.decentralized import Decentralized
from fedge.recsys.algorithms.federated import FederatedRecommender
from fedge.recsys.config import RecsysConfig
from fedge.recsys.server_opt import ServerOptimizer

FILENAME = "checkpoint.pt"
MAGIC = b"FEDGE-RECSYS-CHECKPOINT v1\n"
FAMILY = b"FEDGE-RECSYS-CHECKPOINT v"
UNHASHED = ("out_dir", "progress", "runtime", "train.rounds")


def config_hash(cfg: RecsysConfig) -> str:
    return checkfile.config_hash(to_dict(cfg), UNHASHED)


@dataclass
class RecCheckpoint:
    algorithm: str
    round: int
    config_hash: str
    config: dict[str, Any]
    checkpoint_every: int
    run_id: str
    shared: dict[str, torch.Tensor]
    user: torch.Tensor | None
    algorithm_state: dict[str, Any]
    ledger: dict[str, Any]
    history: list[dict[str, Any]]
    totals: list[int]  # bytes sent by devices, received by devices, between peers
    round_times: list[float]
    privacy: dict[str, Any] | None = None  # `UserLevelDP.state_dict()` under privacy.mechanism user
    best: dict[str, Any] | None = None  # `Selection.state_dict()`: the best validation round and its scoring state


def _server_optimizers(algo: RecAlgorithm, state: RecState) -> list[ServerOptimizer]:
    """The algorithm's server optimisers, one per shared model, in a fixed order (created if not used yet: they
    start empty either way)."""
    if isinstance(algo, Decentralized):
        return [algo.inner.server_optimizer(algo.edge_state(state, edge))
                for edge in range(algo.ctx.cfg.decentralized.num_edges)]
    if isinstance(algo, FederatedRecommender):
        return [algo.server_optimizer(state)]
    return []


def algorithm_state(algo: RecAlgorithm, state: RecState) -> dict[str, Any]:
    """What `algo` keeps between rounds outside `state`."""
    if hasattr(algo, "state_dict"):
        return {"custom": algo.state_dict()}
    out: dict[str, Any] = {"server": [{"m": dict(o.m), "v": dict(o.v)} for o in _server_optimizers(algo, state)]}
    if isinstance(algo, Centralized) and algo._optimiser is not None:
        out["adam"] = algo._optimiser.state_dict()
    return out


def capture(cfg: RecsysConfig, algo: RecAlgorithm, state: RecState, every: int, run_id: str, ledger: dict[str, Any],
            history: list[dict[str, Any]], totals: list[int], round_times: list[float],
            privacy: dict[str, Any] | None = None, best: dict[str, Any] | None = None) -> RecCheckpoint:
    """The checkpoint after round `len(history)` (`privacy`: the DP mechanism's state, if any; `best`: the selected
    round's scoring state, `fedge.recsys.selection.Selection.state_dict`)."""
    return RecCheckpoint(
        algorithm=cfg.algorithm, round=len(history), config_hash=config_hash(cfg), config=to_dict(cfg),
        checkpoint_every=every, run_id=run_id, shared={k: v.detach().clone() for k, v in state.shared.items()},
        user=None if state.user is None else state.user.detach().clone(),
        algorithm_state=algorithm_state(algo, state), ledger=ledger, history=list(history), totals=list(totals),
        round_times=list(round_times), privacy=privacy, best=best)


def restore(algo: RecAlgorithm, state: RecState, saved: RecCheckpoint) -> None:
    """Put `saved` into the freshly initialised `state` (in place) and `algo`."""
    if set(saved.shared) != set(state.shared) or (saved.user is None) != (state.user is None):
        raise ConfigError(f"checkpoint: its model ({', '.join(sorted(saved.shared))}) is not {saved.algorithm}'s")
    with torch.no_grad():
        for name, tensor in saved.shared.items():
            if tensor.shape != state.shared[name].shape:
                raise ConfigError(f"checkpoint: {name} has shape {tuple(tensor.shape)}, this run's model "
                                  f"{tuple(state.shared[name].shape)}; was the data changed?")
            state.shared[name].copy_(tensor)
        if saved.user is not None and state.user is not None:
            if saved.user.shape != state.user.shape:
                raise ConfigError("checkpoint: its user rows do not fit this run's users; was the data changed?")
            state.user.copy_(saved.user)
    extra = saved.algorithm_state
    if "custom" in extra:
        algo.load_state_dict(extra["custom"])  # type: ignore[attr-defined]
        return
    for optimizer, moments in zip(_server_optimizers(algo, state), extra.get("server", []), strict=True):
        optimizer.m = {k: v.clone() for k, v in moments["m"].items()}
        optimizer.v = {k: v.clone() for k, v in moments["v"].items()}
    if "adam" in extra and isinstance(algo, Centralized) and algo._optimiser is not None:
        algo._optimiser.load_state_dict(extra["adam"])


def save(path: str | Path, checkpoint: RecCheckpoint) -> None:
    checkfile.write(path, MAGIC, vars(checkpoint))


def load(path: str | Path, cfg: RecsysConfig | None = None) -> RecCheckpoint:
    """Read and verify a recsys checkpoint; with `cfg`, also check that it was made with the same config."""
    path = Path(path)
    try:
        checkpoint = RecCheckpoint(**checkfile.read(path, MAGIC, FAMILY))
    except TypeError:
        raise ConfigError(f"checkpoint {path}: unreadable payload (fields); refusing to resume") from None
    if cfg is not None:
        expected = config_hash(cfg)
        if checkpoint.config_hash != expected:
            raise ConfigError(f"checkpoint {path}: written with another config (hash {checkpoint.config_hash}, "
                              f"this run's is {expected}); pass the original --config/--set flags or none")
        if checkpoint.round > cfg.train.rounds:
            raise ConfigError(f"checkpoint {path}: at round {checkpoint.round}, beyond train.rounds="
                              f"{cfg.train.rounds}")
    return checkpoint


def resumable(folder: Path, cfg: RecsysConfig) -> RecCheckpoint:
    """The checkpoint `--resume folder` continues from, verified: its file, its config, and that the folder's newest
    results are its own."""
    path = folder / FILENAME
    if not path.exists():
        raise ConfigError(f"--resume: no checkpoint in {folder} (was it run with --checkpoint-every?)")
    saved = load(path, cfg)
    checkfile.verify_results(folder, path, saved.run_id, saved.history)
    return saved


__all__ = ["FILENAME", "RecCheckpoint", "capture", "config_hash", "load", "restore", "resumable", "save"]
