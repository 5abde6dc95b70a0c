"""SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020) over the message layer: the server learns
the sum of the surviving devices' quantized vectors in Z_{2^bits} and nothing else about any one of them (against
an honest-but-curious server colluding with fewer than t devices of a neighbourhood), even when devices drop out
at any stage.

`secure_sum` runs one round: the server's side here, each device's in `SecAggDevice`. Every public key, encrypted
share, masked vector and unmasking share is a `Blobs` message on the transport (kinds KEYS, SHARES, MASKED,
UNMASK), so the ledger counts them. Stages (U_i the devices whose stage-i message arrived):

1. advertise keys -> U1; the server relays to each device its neighbours' public keys;
2. share keys -> U2; the server relays each sealed share to its recipient;
3. masked input -> U3 (whose inputs are summed);
4. unmasking -> U4; from the shares of U4 the server rebuilds b_v of every v in U3 (removing its self mask) and
   s_v,sk of every v in U2 \\ U3 (removing the pairwise masks its surviving neighbours added).

A device whose secrets need t shares from a neighbourhood in which fewer than t devices are left makes the round
impossible: `SecAggAborted` says which device, which stage and how many were left; the caller skips the round.
The consistency check of the actively secure variant (Bonawitz et al.'s round 3, signatures) is not implemented.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from fedge.core.streams import uniform
from fedge.messaging import Blobs, Kind, Role, Transport, route
from fedge.secure import shamir
from fedge.secure.crypto import KEY_BYTES, KeyPair, derive_key, expand_mask, modulus_mask
from fedge.secure.graph import neighbourhoods
from fedge.secure.secagg_device import (
    KEY_SHARE,
    SELF_SHARE,
    SHARE_SEALED,
    UNMASK_ENTRY,
    SecAggDevice,
    mask_sign,
    pack_ids,
    pack_keys,
    split_addressed,
    unpack_values,
)


class SecAggAborted(RuntimeError):
    """The round cannot be completed: too few devices left in some neighbourhood to rebuild a secret."""


class Stage(IntEnum):
    """The message a device fails to send when it drops out at this stage."""

    KEYS = 1  # drops before advertising keys (never takes part)
    SHARES = 2  # drops after advertising, before sharing keys
    MASKED = 3  # drops after sharing keys, before sending its masked input
    UNMASK = 4  # drops after sending its masked input, before unmasking (its input is still summed)


@dataclass(frozen=True)
class SecAggSettings:
    threshold: int  # t: shares needed to rebuild a secret
    neighbours: int | None = None  # k of SecAgg+'s random k-regular graph; None: the complete graph (SecAgg)
    bits: int = 32  # the sum lives in Z_{2^bits}
    key_source: str = "seeded"  # "seeded": keys from the run's streams (reproducible); "system": os.urandom


@dataclass
class SecAggResult:
    total: np.ndarray  # [d] uint64: Σ over `summed` of the devices' vectors, mod 2^bits
    summed: list[int]  # U3: whose vectors the total holds, in id order
    survivors: dict[str, list[int]]  # U1..U4 by stage name
    seconds: dict[str, float] = field(default_factory=dict)  # device-side and server-side compute


class _Channel:
    """Uploads and downloads of one round as `Blobs` messages between device rows and the aggregator (the server,
    or an edge server of hfl: `aggregator` = (role, endpoint))."""

    def __init__(self, transport: Transport, round_number: int, row_of: Mapping[int, int],
                 aggregator: tuple[Role, int] = (Role.SERVER, 0)) -> None:
        self.transport, self.round, self.row_of = transport, round_number, row_of
        self.role, self.endpoint = aggregator
        self.id_of = {row: device for device, row in row_of.items()}

    def up(self, kind: Kind, blobs: Mapping[int, bytes]) -> dict[int, bytes]:
        """Devices -> server; returns {sender id: bytes} as the server received them."""
        if not blobs:
            return {}
        senders = sorted(blobs)
        got = self.transport.gather(route(kind, self.round, Role.DEVICE, self.role,
                                          torch.tensor([self.row_of[u] for u in senders]), self.endpoint),
                                    Blobs(tuple(blobs[u] for u in senders)))
        assert isinstance(got.body, Blobs)
        return {self.id_of[int(r)]: b for r, b in zip(got.route.senders.tolist(), got.body.blobs)}

    def down(self, kind: Kind, blobs: Mapping[int, bytes]) -> dict[int, bytes]:
        """Server -> devices; returns {receiver id: bytes} as the devices received them."""
        if not blobs:
            return {}
        receivers = sorted(blobs)
        got = self.transport.broadcast(route(kind, self.round, self.role, Role.DEVICE, self.endpoint,
                                             torch.tensor([self.row_of[v] for v in receivers])),
                                       Blobs(tuple(blobs[v] for v in receivers)))
        assert isinstance(got.body, Blobs)
        return {self.id_of[int(r)]: b for r, b in zip(got.route.receivers.tolist(), got.body.blobs)}


def _require(count: int, threshold: int, what: str, round_number: int) -> None:
    if count < threshold:
        raise SecAggAborted(f"secure aggregation aborted in round {round_number}: {what} has {count} devices left, "
                            f"fewer than the threshold t={threshold}")


def secure_sum(inputs: Mapping[int, np.ndarray], settings: SecAggSettings, round_number: int, seed: int,
               transport: Transport, row_of: Mapping[int, int] | None = None,
               dropouts: Mapping[Stage, Collection[int]] | None = None,
               aggregator: tuple[Role, int] = (Role.SERVER, 0)) -> SecAggResult:
    """One round of SecAgg(+) among the devices of `inputs` ({device id: [d] uint64 vector < 2^bits}).

    `row_of` maps device ids to the transport's rows (default: the id); `dropouts[stage]` are the devices that
    drop out before sending that stage's message; `aggregator` is who plays the server ((Role.EDGE, k): the edge
    server of hfl's cluster k). Raises `SecAggAborted` when the sum cannot be recovered.
    """
    t, bits, rnd = settings.threshold, settings.bits, round_number
    drop = {stage: set((dropouts or {}).get(stage, ())) for stage in Stage}
    channel = _Channel(transport, rnd, row_of if row_of is not None else {u: u for u in inputs}, aggregator)
    seconds = {"device": 0.0, "server": 0.0}
    clock = time.perf_counter()
    devices = {u: SecAggDevice(u, rnd, seed, t, bits, settings.key_source) for u in sorted(inputs)
               if u not in drop[Stage.KEYS]}
    seconds["device"] += time.perf_counter() - clock

    # Stage 1: advertise keys; the server builds the graph over U1 and relays each device its neighbours' keys.
    keys = channel.up(Kind.KEYS, {u: d.advertise() for u, d in devices.items()})
    u1 = sorted(keys)
    graph = neighbourhoods(u1, settings.neighbours, seed, rnd)
    public = {u: (blob[:KEY_BYTES], blob[KEY_BYTES:]) for u, blob in keys.items()}
    for u in u1:
        _require(len(graph[u]), t, f"the neighbourhood of device {u} after advertising keys", rnd)
    relayed = channel.down(Kind.KEYS, {u: pack_keys({v: public[v] for v in graph[u]}) for u in u1})

    # Stage 2: share keys; the server relays each sealed share to its recipient.
    clock = time.perf_counter()
    sharing = {u: devices[u].share_keys(relayed[u]) for u in u1 if u not in drop[Stage.SHARES]}
    seconds["device"] += time.perf_counter() - clock
    shares = channel.up(Kind.SHARES, sharing)
    u2 = sorted(shares)
    for u in u2:
        _require(sum(v in shares for v in graph[u]), t, f"the neighbourhood of device {u} after sharing keys", rnd)
    addressed = {u: split_addressed(shares[u], SHARE_SEALED) for u in u2}
    inboxes = {v: b"".join(u.to_bytes(4, "little") + addressed[u][v] for u in sorted(addressed) if v in addressed[u])
               for v in u2}
    clock = time.perf_counter()
    for v, blob in channel.down(Kind.SHARES, inboxes).items():
        devices[v].receive_shares(blob)

    # Stage 3: masked inputs.
    masked_blobs = {u: devices[u].masked_input(inputs[u]) for u in u2 if u not in drop[Stage.MASKED]}
    seconds["device"] += time.perf_counter() - clock
    masked = channel.up(Kind.MASKED, masked_blobs)
    u3 = sorted(masked)
    _require(len(u3), t, "the set of devices whose masked input arrived", rnd)

    # Stage 4: unmasking: each survivor learns which of its neighbours' inputs arrived and returns shares.
    notices = channel.down(Kind.UNMASK, {u: pack_ids([v for v in graph[u] if v in masked]) for u in u3})
    clock = time.perf_counter()
    responses = {u: devices[u].unmask(notices[u]) for u in u3 if u not in drop[Stage.UNMASK]}
    seconds["device"] += time.perf_counter() - clock
    unmasking = channel.up(Kind.UNMASK, responses)
    u4 = sorted(unmasking)

    clock = time.perf_counter()
    total = _unmask(masked, unmasking, graph, public, u2, settings, rnd)
    seconds["server"] += time.perf_counter() - clock
    survivors = {"keys": u1, "shares": u2, "masked": u3, "unmask": u4}
    return SecAggResult(total, u3, survivors, seconds)


def simulated_dropouts(seed: int, dropout: float, round_number: int, ids: torch.Tensor) -> dict[Stage, list[int]]:
    """Simulated mid-protocol dropouts of the devices `ids` in one round: each leaves at the first stage whose draw
    of its "secagg-dropout" stream is below `dropout` (none when `dropout` is 0), as `dropouts` for `secure_sum`."""
    stages = list(Stage)
    if dropout == 0 or len(ids) == 0:
        return {}
    draws = uniform(seed, "secagg-dropout", round_number, ids, len(stages)) < dropout
    out: dict[Stage, list[int]] = {}
    for device, row in zip(ids.tolist(), draws.tolist()):
        if any(row):
            out.setdefault(stages[row.index(True)], []).append(device)
    return out


def _unmask(masked: dict[int, bytes], unmasking: dict[int, bytes], graph: dict[int, list[int]],
            public: dict[int, tuple[bytes, bytes]], u2: list[int], settings: SecAggSettings, rnd: int) -> np.ndarray:
    """The server's last step: rebuild the secrets from the unmasking shares and remove every mask from Σ y_u."""
    t, bits = settings.threshold, settings.bits
    collected: dict[tuple[int, int], dict[int, int]] = {}  # (device v, which secret) -> {share point: value}
    for w in sorted(unmasking):
        blob = unmasking[w]
        for offset in range(0, len(blob), UNMASK_ENTRY.size):
            v, which, value = UNMASK_ENTRY.unpack_from(blob, offset)
            if w not in graph.get(v, ()):
                raise ValueError(f"device {w} sent a share of device {v}, which is not its neighbour")
            collected.setdefault((v, which), {})[shamir.share_point(w)] = shamir.decode_element(value)
    total = np.zeros(0, dtype=np.uint64)
    for u in sorted(masked):
        values = unpack_values(masked[u], bits)
        total = values if len(total) == 0 else total + values
    length = len(total)
    for v in sorted(masked):  # survivors: remove their self masks
        got = collected.get((v, SELF_SHARE), {})
        _require(len(got), t, f"the neighbourhood of device {v} (unmasking its self mask)", rnd)
        seed = shamir.combine(got, t, KEY_BYTES)
        total = total - expand_mask(derive_key(seed, "self-mask", rnd), length, bits)
    for v in [u for u in u2 if u not in masked]:  # dropped after sharing: remove the masks survivors added with v
        got = collected.get((v, KEY_SHARE), {})
        _require(len(got), t, f"the neighbourhood of device {v} (recovering the key of a dropped device)", rnd)
        keys = KeyPair(shamir.combine(got, t, KEY_BYTES))
        if keys.public_bytes != public[v][1]:
            raise ValueError(f"the rebuilt key of device {v} does not match the one it advertised")
        for w in graph[v]:
            if w in masked:
                pair = expand_mask(derive_key(keys.agree(public[w][1]), "pair-mask", rnd), length, bits)
                total = total - pair if mask_sign(w, v) > 0 else total + pair
    return total & modulus_mask(bits)


__all__ = ["SecAggAborted", "SecAggResult", "SecAggSettings", "Stage", "secure_sum", "simulated_dropouts"]
