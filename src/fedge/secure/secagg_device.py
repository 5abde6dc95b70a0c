"""A device's side of SecAgg / SecAgg+ (Bonawitz et al., CCS 2017, figure 4; Bell et al., CCS 2020), and the byte
layouts of its messages.

Per round a device holds two fresh X25519 key pairs (c: to encrypt shares, s: to agree pairwise masks) and a
32-byte self-mask seed b, all drawn from its own "secagg-keys" stream of the round. It

1. advertises (c_pk, s_pk);
2. splits s_sk and b into Shamir shares with threshold t, one pair of shares per neighbour that advertised keys,
   each encrypted to its recipient with ChaCha20-Poly1305 under a key agreed from the c keys;
3. uploads y = x + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) mod 2^bits over the neighbours v whose shares it
   received (those that reached stage 2), s_uv the X25519 secret of the s keys;
4. told which of those neighbours' masked inputs arrived, returns its share of b_v for each survivor v and its
   share of s_v,sk for each neighbour that dropped, never both for one device (which would unmask v's input).
"""

from __future__ import annotations

import struct

import numpy as np

from fedge.secure import shamir
from fedge.secure.crypto import (
    KEY_BYTES,
    KeyPair,
    derive_key,
    expand_mask,
    modulus_mask,
    open_sealed,
    seal,
    secret_bytes,
)

ID = struct.Struct("<I")
SHARE_PLAIN = struct.Struct(f"<II{shamir.ELEMENT_BYTES}s{shamir.ELEMENT_BYTES}s")  # from, to, s_sk share, b share
SHARE_SEALED = SHARE_PLAIN.size + 16  # + the Poly1305 tag
UNMASK_ENTRY = struct.Struct(f"<IB{shamir.ELEMENT_BYTES}s")  # about device v, 0: share of b_v / 1: of s_v,sk, y
SELF_SHARE, KEY_SHARE = 0, 1


def value_width(bits: int) -> int:
    """Bytes per masked value on the wire: ceil(bits / 8)."""
    return (bits + 7) // 8


def pack_values(values: np.ndarray, bits: int) -> bytes:
    """uint64 values < 2^bits, `value_width(bits)` little-endian bytes each."""
    width = value_width(bits)
    return np.ascontiguousarray(values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]).tobytes()


def unpack_values(blob: bytes, bits: int) -> np.ndarray:
    width = value_width(bits)
    raw = np.frombuffer(blob, dtype=np.uint8).reshape(-1, width)
    padded = np.zeros((len(raw), 8), dtype=np.uint8)
    padded[:, :width] = raw
    return padded.view("<u8").reshape(-1).astype(np.uint64)


def pack_ids(ids: list[int]) -> bytes:
    return b"".join(ID.pack(i) for i in ids)


def unpack_ids(blob: bytes) -> list[int]:
    return [ID.unpack_from(blob, offset)[0] for offset in range(0, len(blob), ID.size)]


def pack_keys(entries: dict[int, tuple[bytes, bytes]]) -> bytes:
    """The server's relay of public keys: (id, c_pk, s_pk) per neighbour, in id order."""
    return b"".join(ID.pack(v) + c + s for v, (c, s) in sorted(entries.items()))


def unpack_keys(blob: bytes) -> dict[int, tuple[bytes, bytes]]:
    entry = ID.size + 2 * KEY_BYTES
    out = {}
    for offset in range(0, len(blob), entry):
        (v,) = ID.unpack_from(blob, offset)
        start = offset + ID.size
        out[v] = (blob[start:start + KEY_BYTES], blob[start + KEY_BYTES:start + 2 * KEY_BYTES])
    return out


def split_addressed(blob: bytes, width: int) -> dict[int, bytes]:
    """{id: payload} from a concatenation of (id u32, `width` bytes) entries."""
    entry = ID.size + width
    return {ID.unpack_from(blob, o)[0]: blob[o + ID.size:o + entry] for o in range(0, len(blob), entry)}


def mask_sign(owner: int, peer: int) -> int:
    """+1 when the owner adds the pair's mask, −1 when it subtracts it (the lower id adds)."""
    return 1 if owner < peer else -1


class SecAggDevice:
    """One device's state in one round of secure aggregation."""

    def __init__(self, device_id: int, round_number: int, seed: int, threshold: int, bits: int,
                 key_source: str = "seeded") -> None:
        self.id, self.round, self.seed, self.threshold, self.bits = device_id, round_number, seed, threshold, bits
        self.key_source = key_source
        raw = secret_bytes(seed, "secagg-keys", device_id, round_number, 3 * KEY_BYTES, key_source)
        self.cipher_keys = KeyPair(raw[:KEY_BYTES])
        self.mask_keys = KeyPair(raw[KEY_BYTES:2 * KEY_BYTES])
        self.self_seed = raw[2 * KEY_BYTES:]
        self.peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self.held: dict[int, tuple[int, int]] = {}  # sender -> (its s_sk share, its b share) addressed to me

    def advertise(self) -> bytes:
        """Stage 1: (c_pk, s_pk)."""
        return self.cipher_keys.public_bytes + self.mask_keys.public_bytes

    def share_keys(self, relayed_keys: bytes) -> bytes:
        """Stage 2: shares of s_sk and b for every neighbour that advertised keys, sealed to each; (recipient id,
        ciphertext) entries in id order."""
        self.peer_keys = unpack_keys(relayed_keys)
        recipients = sorted(self.peer_keys)
        points = [shamir.share_point(v) for v in recipients]
        width = (shamir.ELEMENT_BYTES + 8) * (self.threshold - 1)
        randomness = secret_bytes(self.seed, "secagg-shamir", self.id, self.round, 2 * width, self.key_source)
        key_shares = shamir.split(self.mask_keys.private_bytes, points, self.threshold, randomness[:width])
        seed_shares = shamir.split(self.self_seed, points, self.threshold, randomness[width:])
        out = []
        for v, x in zip(recipients, points):
            plain = SHARE_PLAIN.pack(self.id, v, shamir.encode_element(key_shares[x]),
                                     shamir.encode_element(seed_shares[x]))
            key = derive_key(self.cipher_keys.agree(self.peer_keys[v][0]), "share", self.round)
            out.append(ID.pack(v) + seal(key, plain, self.id, v, self.round))
        return b"".join(out)

    def receive_shares(self, relayed_shares: bytes) -> None:
        """Stage 2 (receiving): open the shares addressed to me; their senders are the peers I mask with."""
        for u, sealed in split_addressed(relayed_shares, SHARE_SEALED).items():
            key = derive_key(self.cipher_keys.agree(self.peer_keys[u][0]), "share", self.round)
            sender, receiver, key_share, seed_share = SHARE_PLAIN.unpack(open_sealed(key, sealed, u, self.id,
                                                                                     self.round))
            if (sender, receiver) != (u, self.id):
                raise ValueError(f"device {self.id}: a share from {u} names {sender} -> {receiver}")
            self.held[u] = (shamir.decode_element(key_share), shamir.decode_element(seed_share))

    def self_mask(self, length: int) -> np.ndarray:
        return expand_mask(derive_key(self.self_seed, "self-mask", self.round), length, self.bits)

    def masked_input(self, quantized: np.ndarray) -> bytes:
        """Stage 3: y = x + PRG(b) ± PRG(s_uv) over the peers whose shares arrived, mod 2^bits."""
        length = len(quantized)
        masked = quantized.astype(np.uint64) + self.self_mask(length)
        for v in sorted(self.held):
            pair = expand_mask(derive_key(self.mask_keys.agree(self.peer_keys[v][1]), "pair-mask", self.round),
                               length, self.bits)
            masked = masked + pair if mask_sign(self.id, v) > 0 else masked - pair
        return pack_values(masked & modulus_mask(self.bits), self.bits)

    def unmask(self, survivors_blob: bytes) -> bytes:
        """Stage 4: for each peer I masked with, my share of its b (it survived) or of its s_sk (it dropped)."""
        survivors = set(unpack_ids(survivors_blob))
        out = []
        for v in sorted(self.held):
            key_share, seed_share = self.held[v]
            which, value = (SELF_SHARE, seed_share) if v in survivors else (KEY_SHARE, key_share)
            out.append(UNMASK_ENTRY.pack(v, which, shamir.encode_element(value)))
        return b"".join(out)


__all__ = ["KEY_SHARE", "SELF_SHARE", "SHARE_SEALED", "UNMASK_ENTRY", "SecAggDevice", "mask_sign", "pack_ids",
           "pack_keys", "pack_values", "split_addressed", "unpack_ids", "unpack_keys", "unpack_values",
           "value_width"]
