"""Run a recommendation experiment: load, split, train round by round over a transport, evaluate, write the run folder.

Run folder (`fedge.runfolder.RunFolder`): `metrics.jsonl` (one object per round), `summary.json` (final metrics,
bytes, resolved `config` and `environment`), `config.yaml`, `item_embeddings.pt` (the shared item table; per edge for
decentralized runs) and `topk.json` (each user's top-K unseen items, raw MovieLens ids) for the edge-caching issue.

Bytes are the transport ledger's: the lengths of the messages that crossed (15-byte frames included), per round:

* `mb_up` — every byte devices sent (uploads to the server or their edge, and item requests);
* `mb_down` — every byte devices received (downloads);
* `mb_peer` — every byte between peers (edge↔edge profiles, requests and models for dfedmf/dfedncf);
* `mb_total` — cumulative over the run, all links; `bytes_by_link` — cumulative bytes per link kind.

Evaluation is the experimenter's measurement, not part of the protocol: devices score with the aggregator's
current model without a counted download. Every evaluation round (`eval_every`, and the last round run) records the
validation metrics (`val_hr@10`, `val_ndcg@10`; explicit: `val_rmse`) and the test ones (`test_...`). The summary
reports the round with the best validation metric (`best_round`; `fedge.recsys.selection`), its validation and test
metrics, and the exported top-K and item table are that round's; `train.patience` > 0 ends the run (`stopped`
saying why) once that many rounds passed without a better validation metric. No choice reads a test metric.

The folder is written as every command's is (`fedge.runfolder.staging`: a rerun into a folder holding a run
replaces it only once finished); `checkpoint_every` K > 0 writes `checkpoint.pt` every K rounds and after the last,
and `resume` continues from it (`fedge.recsys.checkpoint`). Under `privacy.mechanism: user` (`fedge.recsys.dp`)
users take part by Poisson sampling, every record gets `epsilon` and `max_grad_norm`, the summary the accounting
(`epsilon`, `delta`, `noise_multiplier`, ...), and a `privacy.target_epsilon` ends the run early (normally, with the
rounds it has, `stopped` saying why) before a round that would exceed it. A training loss, model parameter or score
that is not finite stops the run with `fedge.runfolder.Diverged` (FAILED in the folder): a diverged model scores NaN,
and NaN compares false, so its ranks would otherwise come out perfect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedge.config import ConfigError, to_dict
from fedge.core.streams import Streams
from fedge.data.movielens import Ratings, load_movielens
from fedge.messaging import Ledger, Link, Transport, make_transport
from fedge.messaging.distributed import DistributedTransport
from fedge.output import atomic_write_bytes, dumps, progress_bar
from fedge.recsys import checkpoint
from fedge.recsys.algorithms import RECSYS_ALGORITHMS, build
from fedge.recsys.algorithms.base import Context, RecAlgorithm, RecState
from fedge.recsys.config import RecsysConfig
from fedge.recsys.draws import Draws
from fedge.recsys.evaluation import evaluate, export
from fedge.recsys.protocol import RecData, build_explicit, build_implicit
from fedge.recsys.selection import Selection
from fedge.runfolder import Diverged, RunFolder, RunResult, check_finite, complete
from fedge.runfolder.staging import attempt

if TYPE_CHECKING:
    from fedge.runtimes.distributed import Shard

MB = 1e6
PEER_LINKS = (Link.EDGE_EDGE.value, Link.DEVICE_DEVICE.value)


def prepare(cfg: RecsysConfig, ratings: Ratings | None = None) -> tuple[Ratings, RecData]:
    """Load (unless given) and split the ratings under the configured protocol (stream `recsys-split`)."""
    if ratings is None:
        ratings = load_movielens(cfg.data.dataset, cfg.data.data_dir, cfg.data.download)
    gen = Streams(cfg.seed).generator("recsys-split")
    if cfg.data.protocol == "implicit":
        return ratings, build_implicit(ratings, cfg.data.eval_negatives, gen)
    return ratings, build_explicit(ratings, cfg.data.test_fraction, gen)


def select_clients(streams: Streams, rnd: int, num_users: int, count: int) -> torch.Tensor:
    """The users taking part in round `rnd`: all, or the `count` whose `recsys-clients` draw is smallest (sorted)."""
    if count >= num_users:
        return torch.arange(num_users)
    keys = streams.uniform("recsys-clients", rnd, torch.arange(num_users), 1)[:, 0]
    return torch.argsort(keys, stable=True)[:count].sort().values


def _traffic(ledger: Ledger) -> tuple[int, int, int]:
    """This round's (device-sent, device-received, peer) bytes from the ledger."""
    peer = sum(ledger.round_by_link[link] for link in PEER_LINKS)
    return int(ledger.device_sent.sum()), int(ledger.device_received.sum()), peer


def divergence_hint(cfg: RecsysConfig) -> str:
    """The settings to look at when `cfg.algorithm`'s model diverges."""
    if cfg.algorithm == "fedmeta":
        return "lower meta.inner_lr or train.lr"
    if cfg.algorithm.startswith("central"):
        return "lower train.lr"
    return "lower train.lr (or train.server_lr)"


@dataclass
class Progress:
    """What the rounds so far produced (and a checkpoint carries): per-round records, byte totals, round times."""

    history: list[dict[str, Any]] = field(default_factory=list)
    totals: list[int] = field(default_factory=lambda: [0, 0, 0])  # up, down, peer
    round_times: list[float] = field(default_factory=list)


def run(cfg: RecsysConfig, ratings: Ratings | None = None, write: bool = True,
        transport: Callable[[Ledger], Transport] | None = None, checkpoint_every: int = 0,
        resume: bool = False, sharding: Callable[[int], Shard] | None = None) -> RunResult:
    """Train and evaluate `cfg.algorithm`; the summary is also written to `cfg.out_dir` (unless not `write`).

    `transport` builds the transport from the run's ledger (default: `cfg.runtime.transport`); tests pass a
    loopback transport that records every message. `checkpoint_every` K > 0 writes `out_dir/checkpoint.pt` every K
    rounds and after the last; `resume` continues the run in `out_dir` from it (refusing a corrupt or foreign one, or
    a folder whose newest results are not its own, with a ConfigError).

    `sharding` makes this one process of a distributed run (`fedge.runtimes.distributed`; `fedge recsys` under
    torchrun): given the number of users, it returns the block of users this process hosts, which it trains over the
    `torch.distributed` transport; user rows are joined for evaluation and the ledgers for the records, so every
    process computes the same records as one process would (the one with `write` writes them).
    """
    RECSYS_ALGORITHMS.check([cfg.algorithm], "algorithm")
    if checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every: must be >= 0, got {checkpoint_every}")
    if sharding is not None and (checkpoint_every or resume):
        raise ConfigError("--checkpoint-every/--resume: fedge recsys over several processes does not checkpoint yet")
    if not write:
        return _train(cfg, ratings, transport, None, 0, None, sharding)
    with attempt(cfg.out_dir, "out_dir", resume=resume) as place:  # output problems surface before data loads
        saved = checkpoint.resumable(place.path, cfg) if resume else None
        return _train(cfg, ratings, transport, place.path, checkpoint_every, saved, sharding)


def _train(cfg: RecsysConfig, ratings: Ratings | None, transport: Callable[[Ledger], Transport] | None,
           out: Path | None, checkpoint_every: int, saved: checkpoint.RecCheckpoint | None,
           sharding: Callable[[int], Shard] | None = None) -> RunResult:
    ratings, data = prepare(cfg, ratings)
    streams = Streams(cfg.seed)
    ledger = Ledger(data.num_users)
    shard = sharding(data.num_users) if sharding is not None else None
    if shard is not None:
        carrier: Transport = DistributedTransport(ledger, shard.placement)
    else:
        carrier = transport(ledger) if transport is not None else make_transport(cfg.runtime.transport, ledger)
    whole = (lambda: ledger) if shard is None else (lambda: shard.ledger(ledger))  # every process's counts
    ctx = Context(cfg, data, streams, carrier, hosting=shard)
    algo = build(ctx)
    privacy = ctx.privacy
    state = algo.init_state(streams.generator("recsys-init"))
    done = Progress()
    if saved is not None and out is not None:
        checkpoint.restore(algo, state, saved)
        if privacy is not None and saved.privacy is not None:
            privacy.load_state_dict(saved.privacy)
        ledger.load_state_dict(saved.ledger)
        done = Progress(list(saved.history), list(saved.totals), list(saved.round_times))
        atomic_write_bytes(out / "metrics.jsonl", "".join(dumps(r) + "\n" for r in done.history).encode())
    folder = RunFolder(out, append=saved is not None, run_id=saved.run_id if saved else None) if out else None
    hint = divergence_hint(cfg)
    selection = Selection.replay(data.protocol, cfg.train.patience, done.history)
    if saved is not None:
        selection.load_state(saved.best)
    per_round = max(1, round(cfg.train.client_fraction * data.num_users))
    # why the run ended before train.rounds (early stopping on validation, privacy.target_epsilon), if it did
    stopped = selection.stop_reason(len(done.history)) if selection.exhausted(len(done.history)) else None
    first = cfg.train.rounds + 1 if stopped else len(done.history) + 1  # a resumed run that had stopped early
    try:
        with progress_bar(f"recsys {cfg.algorithm}", cfg.train.rounds, enabled=cfg.progress) as advance:
            advance(len(done.history))
            for rnd in range(first, cfg.train.rounds + 1):
                stopped = privacy.stop_reason(rnd) if privacy is not None else None
                if stopped:  # resuming a run that had stopped at its target ε
                    break
                record = _round(cfg, algo, state, data, streams, ledger, whole, done, privacy, per_round, rnd,
                                hint)
                if privacy is not None:
                    stopped = privacy.stop_reason(rnd + 1) if rnd < cfg.train.rounds else None
                if rnd % cfg.eval_every == 0 or rnd == cfg.train.rounds or stopped is not None:
                    scoring = algo.scoring_state(state, Draws(streams, "recsys-refit", rnd))
                    record.update(evaluate(algo, scoring, data, Draws(streams, "recsys-eval", rnd), f"round {rnd}",
                                           hint))
                    selection.offer(rnd, record, scoring)
                    if stopped is None and rnd < cfg.train.rounds and selection.exhausted(rnd):
                        stopped = selection.stop_reason(rnd)
                done.history.append(record)
                if folder is not None:
                    folder.log(record)
                    if checkpoint_every > 0 and (stopped or rnd == cfg.train.rounds or rnd % checkpoint_every == 0):
                        checkpoint.save(folder.path / checkpoint.FILENAME, checkpoint.capture(
                            cfg, algo, state, checkpoint_every, folder.run_id, ledger.state_dict(), done.history,
                            done.totals, done.round_times, None if privacy is None else privacy.state_dict(),
                            selection.state_dict()))
                status = " ".join(f"{k}={record[k]:.4f}" for k in record if k.startswith("val_"))
                advance(1, status=f"loss={record['loss']:.4f} {status}")
                if stopped:
                    break
    except Diverged as err:
        if folder is not None:
            folder.fail(str(err))
        raise
    finally:
        if folder is not None:
            folder.close()  # metrics.jsonl keeps the finished rounds
    assert selection.best_state is not None, "the last round run is always evaluated"
    counted = whole()
    summary = complete({
        "algorithm": cfg.algorithm, "dataset": cfg.data.dataset, "protocol": data.protocol,
        "users": data.num_users, "items": data.num_items, "rounds": cfg.train.rounds,
        "rounds_done": len(done.history), "best_round": selection.best_round, "stopped": stopped,
        **selection.best_metrics,
        "mb_up": done.totals[0] / MB, "mb_down": done.totals[1] / MB, "mb_peer": done.totals[2] / MB,
        "mb_total": counted.total / MB, "transport": carrier.name, "bytes_by_link": dict(counted.bytes_by_link),
        "messages_by_link": dict(counted.messages_by_link), "bytes_by_kind": dict(counted.bytes_by_kind),
        "mean_round_s": sum(done.round_times) / max(len(done.round_times), 1),
        "duplicates_removed": ratings.duplicates_removed, **({} if privacy is None else privacy.summary()),
        **({} if shard is None else _distributed_summary(shard, carrier)),
    }, to_dict(cfg))
    if folder is not None:
        # the top-K lists score with the model validation chose (fedmeta: the same adaptation as its evaluation)
        export(algo, selection.best_state, data, ratings, cfg, folder.path,
               Draws(streams, "recsys-eval", selection.best_round))
        folder.finish(summary)
    return RunResult(summary, done.history, state)


def _distributed_summary(shard: Shard, carrier: Transport) -> dict[str, Any]:
    """What a distributed run adds to the summary: its processes and what torch.distributed carried besides the
    messages (counts and lengths)."""
    assert isinstance(carrier, DistributedTransport)
    return {"processes": shard.placement.world, "distributed_overhead_bytes": shard.total(carrier.overhead_bytes)}


def _round(cfg: RecsysConfig, algo: RecAlgorithm, state: RecState, data: RecData, streams: Streams, ledger: Ledger,
           whole: Callable[[], Ledger], done: Progress, privacy: Any, per_round: int, rnd: int,
           hint: str) -> dict[str, Any]:
    """Train round `rnd` (selection, local training, aggregation) and return its record, without metrics. `whole()`
    is the ledger of every process (this one's alone in one process)."""
    start = time.perf_counter()
    ledger.begin_round()
    users = (privacy.participants(rnd) if privacy is not None
             else select_clients(streams, rnd, data.num_users, per_round))
    report = algo.server_aggregate(state, algo.client_round(state, users, rnd), rnd)
    done.round_times.append(time.perf_counter() - start)
    check_finite(report.loss, "training loss", f"round {rnd}", hint)
    for name, tensor in [*state.shared.items(), ("user rows", state.user)]:
        if tensor is not None:
            check_finite(tensor.detach(), f"model's {name} parameters", f"round {rnd}", hint)
    counted = whole()
    up, down, peer = _traffic(counted)
    done.totals = [done.totals[0] + up, done.totals[1] + down, done.totals[2] + peer]
    record: dict[str, Any] = {"round": rnd, "clients": len(users), "loss": report.loss,
                              "round_s": done.round_times[-1], "mb_up": up / MB, "mb_down": down / MB,
                              "mb_peer": peer / MB, "mb_total": counted.total / MB,
                              "bytes_by_link": dict(counted.bytes_by_link), **report.extra}
    if privacy is not None:
        record.update(privacy.round_record())
    return record


__all__ = ["evaluate", "prepare", "run", "select_clients"]
