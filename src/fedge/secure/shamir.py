"""Shamir's t-of-n secret sharing (Shamir, CACM 1979) over the prime field GF(2^521 − 1).

Why this field: the secrets of secure aggregation are 32-byte strings (a self-mask seed, an X25519 private key),
which fit in one element of a field of 521 bits, so a secret is one share per recipient, not one per 16-byte chunk;
arithmetic is Python's exact integers (no dependency). A share is the evaluation of a random polynomial of degree
t − 1 with constant term the secret at x = recipient id + 1 (never 0); any t shares determine the secret by Lagrange
interpolation at 0, and fewer than t reveal nothing about it.
"""

from __future__ import annotations

from collections.abc import Mapping

PRIME = (1 << 521) - 1  # a Mersenne prime
ELEMENT_BYTES = 66  # ceil(521 / 8)


def share_point(device_id: int) -> int:
    """The x at which a recipient's share is evaluated (its id + 1: x = 0 would be the secret itself)."""
    return device_id + 1


def split(secret: bytes, points: list[int], threshold: int, randomness: bytes) -> dict[int, int]:
    """Shares {x: f(x)} of `secret` (at most 64 bytes) for the given points, any `threshold` of which recover it.

    `randomness` supplies the t − 1 random coefficients (ELEMENT_BYTES + 8 bytes each, reduced mod the prime: the
    bias of the reduction is below 2^-64), so that shares are reproducible from the run's streams.
    """
    if not 1 <= threshold <= len(points):
        raise ValueError(f"threshold {threshold} needs 1..{len(points)} shares")
    if len(secret) > 64:
        raise ValueError("a secret of at most 64 bytes fits in one field element")
    width = ELEMENT_BYTES + 8
    if len(randomness) < width * (threshold - 1):
        raise ValueError(f"need {width * (threshold - 1)} random bytes for threshold {threshold}")
    coefficients = [int.from_bytes(secret, "little")]
    coefficients += [int.from_bytes(randomness[i * width:(i + 1) * width], "little") % PRIME
                     for i in range(threshold - 1)]
    shares = {}
    for x in points:
        if not 0 < x < PRIME:
            raise ValueError("share points must be non-zero field elements")
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares[x] = value
    return shares


def combine(shares: Mapping[int, int], threshold: int, length: int) -> bytes:
    """The `length`-byte secret from at least `threshold` shares {x: f(x)} (the first `threshold` by x are used)."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a secret shared with threshold {threshold}")
    xs = sorted(shares)[:threshold]
    secret = 0
    for i in xs:
        numerator, denominator = 1, 1
        for j in xs:
            if j != i:
                numerator = numerator * j % PRIME
                denominator = denominator * (j - i) % PRIME
        secret = (secret + shares[i] * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret.to_bytes(length, "little")


def encode_element(value: int) -> bytes:
    return value.to_bytes(ELEMENT_BYTES, "little")


def decode_element(blob: bytes) -> int:
    value = int.from_bytes(blob, "little")
    if value >= PRIME:
        raise ValueError("not a field element")
    return value


__all__ = ["ELEMENT_BYTES", "PRIME", "combine", "decode_element", "encode_element", "share_point", "split"]
