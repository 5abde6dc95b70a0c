"""Homomorphic encryption of uploads: the server forms the sample-weighted sum of encrypted updates without holding
the secret key; devices decrypt what the server sends back.

Threat model: an honest-but-curious server that colludes with no device. The devices share one key pair (set up
among them, e.g. by one of them, before training; the server gets only the public material). The server sees
ciphertexts only; devices see only the aggregate (uploads go to the server alone). A device colluding with the
server could decrypt another device's upload — the price of a single shared key (threshold or multi-key HE would
remove it; not built here). Key generation uses the libraries' system randomness, so HE runs are not bit-for-bit
reproducible; the decrypted aggregates are (Paillier) or agree to within CKKS's approximation error.

* CKKS (Cheon et al., ASIACRYPT 2017) with TenSEAL: the flattened update is packed into ceil(d / slots) vectors of
  poly_modulus_degree / 2 slots; the server multiplies each device's ciphertexts by its plaintext weight w_u (the
  sample count, an integer) and adds them (one rescale: coefficient moduli [60, 40, 60], scale 2^40); devices
  decrypt Σ w_u Δ_u and divide by W = Σ w_u, which the server sends in the clear (it knows the weights). Integer
  weights rather than w_u / W: the rescale's rounding error is absolute, so it is smaller relative to the larger
  sum (measured: relative error ~2e-7 against ~1e-6 with fractional weights). Needs |Σ w_u Δ_u| < 2^19 per
  coordinate (the 60-bit first modulus at scale 2^40).
* Paillier (Paillier, EUROCRYPT 1999) with `phe`: exact. Each value is encoded in fixed point, x ↦ round((x + clip)
  · 2^precision) ≥ 0, and `slots_per_ciphertext` of them are packed into one plaintext in slots wide enough for the
  weighted sum (Σ w · 2^(precision+1)·clip must fit a slot); the server raises each ciphertext to the power of the
  device's integer weight and multiplies them (Enc(a)·Enc(b) = Enc(a + b), Enc(a)^w = Enc(w·a)).

Byte counts are lengths of the serialized ciphertexts; `HeCost` keeps the seconds spent encrypting (all devices),
aggregating (server) and decrypting (one device).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class HeCost:
    upload_bytes: list[int] = field(default_factory=list)  # serialized ciphertexts per device
    download_bytes: int = 0  # the aggregate's ciphertexts
    seconds: dict[str, float] = field(default_factory=lambda: {"encrypt": 0.0, "aggregate": 0.0, "decrypt": 0.0})


def pack_ciphertexts(blobs: list[bytes]) -> bytes:
    """Several serialized ciphertexts as one message body: each preceded by its length (4 bytes, little-endian)."""
    return b"".join(len(b).to_bytes(4, "little") + b for b in blobs)


def unpack_ciphertexts(blob: bytes) -> list[bytes]:
    """The inverse of `pack_ciphertexts`."""
    out, offset = [], 0
    while offset < len(blob):
        size = int.from_bytes(blob[offset:offset + 4], "little")
        out.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    if offset != len(blob):
        raise ValueError("a packed ciphertext message ends in the middle of a ciphertext")
    return out


class Ckks:
    """CKKS with TenSEAL: the devices' context (secret key) and the server's public copy. `secret_context`: a
    context serialized with its secret key (`secret_context_bytes`), to restore the devices' key pair (resume; made
    with the same `poly_modulus_degree`)."""

    def __init__(self, poly_modulus_degree: int = 8192, scale_bits: int = 40,
                 secret_context: bytes | None = None) -> None:
        import tenseal as ts

        self.ts = ts
        if secret_context is not None:
            self.context = ts.context_from(secret_context)
        else:
            self.context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree,
                                      coeff_mod_bit_sizes=[60, scale_bits, 60])
            self.context.global_scale = 2.0 ** scale_bits
        public = self.context.copy()
        public.make_context_public()
        self.public_context_bytes = public.serialize()  # what the server receives, once
        self.slots = poly_modulus_degree // 2

    def secret_context_bytes(self) -> bytes:
        """The devices' context with its secret key (device state: never sent to the server)."""
        return self.context.serialize(save_secret_key=True)

    def encrypt(self, update: np.ndarray) -> list[bytes]:
        """A device's upload: its flattened update in ceil(d / slots) serialized ciphertexts."""
        return [self.ts.ckks_vector(self.context, update[start:start + self.slots].tolist()).serialize()
                for start in range(0, len(update), self.slots)]

    def weighted_sum(self, uploads: list[list[bytes]], weights: list[int],
                     public_context: bytes | None = None) -> list[bytes]:
        """The server's step, with the public context only (`public_context`: as the server received it; default
        `public_context_bytes`): Σ_u w_u · Enc(Δ_u), per ciphertext."""
        server_context = self.ts.context_from(public_context if public_context is not None
                                              else self.public_context_bytes)
        if server_context.has_secret_key():
            raise ValueError("the server's CKKS context must not hold the secret key")
        out = []
        for chunk in range(len(uploads[0])):
            acc = None
            for upload, weight in zip(uploads, weights):
                term = self.ts.ckks_vector_from(server_context, upload[chunk]) * float(weight)
                acc = term if acc is None else acc + term
            assert acc is not None
            out.append(acc.serialize())
        return out

    def decrypt_mean(self, aggregate: list[bytes], total_weight: float, dim: int) -> np.ndarray:
        """A device's view of the aggregate: decrypted with the secret key and divided by W (or, under user-level DP,
        by DP-FedAvg's fixed q·W_pool), [dim] float64."""
        values = [self.ts.ckks_vector_from(self.context, blob).decrypt() for blob in aggregate]
        return np.concatenate([np.asarray(v, dtype=np.float64) for v in values])[:dim] / total_weight


class Paillier:
    """Paillier with `phe`, fixed-point values packed several per ciphertext, weighted sum with integer weights."""

    def __init__(self, key_bits: int = 2048, precision_bits: int = 24, clip: float = 1.0,
                 max_total_weight: int = 1 << 20) -> None:
        from phe import paillier

        self.public_key, self.private_key = paillier.generate_paillier_keypair(n_length=key_bits)
        self.precision_bits, self.clip = precision_bits, clip
        self.max_total_weight = max_total_weight
        value_bits = math.ceil(math.log2(2 * clip * 2 ** precision_bits + 1))
        self.slot_bits = value_bits + max_total_weight.bit_length()  # holds Σ w·value without carries
        self.slots_per_ciphertext = (self.public_key.n.bit_length() - 1) // self.slot_bits
        self.ciphertext_bytes = (self.public_key.nsquare.bit_length() + 7) // 8

    def encode(self, update: np.ndarray) -> list[int]:
        """Fixed-point integers in [0, 2^(precision+1)·clip]: round((clip(x) + clip) · 2^precision)."""
        clipped = np.clip(update.astype(np.float64), -self.clip, self.clip)
        return [int(v) for v in np.rint((clipped + self.clip) * 2.0 ** self.precision_bits).astype(np.int64)]

    def _pack(self, values: list[int]) -> list[int]:
        per = self.slots_per_ciphertext
        return [sum(v << (self.slot_bits * i) for i, v in enumerate(values[start:start + per]))
                for start in range(0, len(values), per)]

    def encrypt(self, update: np.ndarray) -> list[bytes]:
        """A device's upload: packed fixed-point values, one serialized ciphertext (n² bytes) per pack."""
        return [self.public_key.raw_encrypt(packed).to_bytes(self.ciphertext_bytes, "little")
                for packed in self._pack(self.encode(update))]

    def weighted_sum(self, uploads: list[list[bytes]], weights: list[int]) -> list[bytes]:
        """The server's step: Π_u Enc(x_u)^{w_u} mod n² = Enc(Σ_u w_u x_u), per ciphertext (integer weights)."""
        if sum(weights) > self.max_total_weight or any(w < 0 for w in weights):
            raise ValueError(f"weights must be non-negative and sum to at most {self.max_total_weight}")
        nsquare = self.public_key.nsquare
        out = []
        for chunk in range(len(uploads[0])):
            acc = 1
            for upload, weight in zip(uploads, weights):
                acc = acc * pow(int.from_bytes(upload[chunk], "little"), weight, nsquare) % nsquare
            out.append(acc.to_bytes(self.ciphertext_bytes, "little"))
        return out

    def decrypt_sum(self, aggregate: list[bytes], dim: int) -> list[int]:
        """Σ_u w_u · encode(x_u), exact integers, [dim]."""
        slot_mask = (1 << self.slot_bits) - 1
        values = []
        for blob in aggregate:
            packed = self.private_key.raw_decrypt(int.from_bytes(blob, "little"))
            values += [(packed >> (self.slot_bits * i)) & slot_mask for i in range(self.slots_per_ciphertext)]
        return values[:dim]

    def decode_mean(self, sums: list[int], total_weight: int) -> np.ndarray:
        """The weighted mean from the exact weighted sum of encodings: Σ w q / (W · 2^p) − clip."""
        scale = float(total_weight) * 2.0 ** self.precision_bits
        return np.array([s / scale for s in sums], dtype=np.float64) - self.clip


def run_round(scheme: Ckks | Paillier, updates: list[np.ndarray], weights: list[int]) -> tuple[np.ndarray, HeCost]:
    """One round of encrypted weighted averaging: encrypt every update, aggregate at the server, decrypt at a
    device; returns (the weighted mean, [d] float64, and its cost)."""
    cost = HeCost()
    clock = time.perf_counter()
    uploads = [scheme.encrypt(u) for u in updates]
    cost.seconds["encrypt"] = time.perf_counter() - clock
    cost.upload_bytes = [sum(len(b) for b in upload) for upload in uploads]
    clock = time.perf_counter()
    aggregate = scheme.weighted_sum(uploads, weights)
    cost.seconds["aggregate"] = time.perf_counter() - clock
    cost.download_bytes = sum(len(b) for b in aggregate)
    clock = time.perf_counter()
    dim = len(updates[0])
    if isinstance(scheme, Ckks):
        mean = scheme.decrypt_mean(aggregate, sum(weights), dim)
    else:
        mean = scheme.decode_mean(scheme.decrypt_sum(aggregate, dim), sum(weights))
    cost.seconds["decrypt"] = time.perf_counter() - clock
    return mean, cost


__all__ = ["Ckks", "HeCost", "Paillier", "pack_ciphertexts", "run_round", "unpack_ciphertexts"]
