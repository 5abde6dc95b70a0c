"""The cryptographic primitives of secure aggregation, from the `cryptography` package (Bonawitz et al., CCS 2017,
section 3; Bell et al., CCS 2020).

* key agreement: X25519 (two key pairs per device and round: one to encrypt shares, one to derive pairwise masks);
* key derivation: HKDF-SHA256 over the *whole* 32-byte shared secret, with a label per use, so a mask key and a
  share-encryption key are never the same (Flower's SecAgg+ seeds its masks with a 32-bit value instead, which a
  server can search exhaustively);
* mask expansion: ChaCha20's keystream, read as little-endian 64-bit words reduced mod 2^bits;
* share encryption: ChaCha20-Poly1305 (AEAD) with the pair's key, the nonce and associated data naming sender,
  receiver and round, so a share cannot be replayed to another device or round.

Key material comes from `secret_bytes`: from the run's named random stream by default (reproducible runs, as every
other draw in fedge; the keys are then only as secret as the run's seed), or from the operating system.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedge.core.streams import generator

KEY_BYTES = 32
_ROUND = struct.Struct("<I")
_NONCE = struct.Struct("<III")  # sender id, receiver id, round: unique per (pair key, direction)


def secret_bytes(seed: int, purpose: str, device: int, round_number: int, count: int, source: str = "seeded"
                 ) -> bytes:
    """`count` secret bytes of one device in one round: from the named stream (seed, purpose, device, round) when
    `source` is "seeded" (reproducible), from `os.urandom` when it is "system"."""
    if source == "system":
        return os.urandom(count)
    drawn = torch.randint(0, 256, (count,), generator=generator(seed, purpose, device, round_number),
                          dtype=torch.uint8)
    return drawn.numpy().tobytes()


class KeyPair:
    """An X25519 key pair from 32 secret bytes (the private key is shared by Shamir as exactly those bytes)."""

    def __init__(self, private_bytes: bytes) -> None:
        self.private_bytes = private_bytes
        self._private = X25519PrivateKey.from_private_bytes(private_bytes)
        self.public_bytes = self._private.public_key().public_bytes_raw()

    def agree(self, peer_public: bytes) -> bytes:
        """The 32-byte X25519 shared secret with the holder of `peer_public`."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def derive_key(shared_secret: bytes, label: str, round_number: int) -> bytes:
    """A 32-byte key for one use (`label`) in one round, HKDF-SHA256 over the whole shared secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"fedge-secagg/" + label.encode() + _ROUND.pack(round_number))
    return hkdf.derive(shared_secret)


def expand_mask(key: bytes, length: int, bits: int) -> np.ndarray:
    """[length] uint64: ChaCha20's keystream under `key` (zero nonce: every key is used for one mask only), as
    64-bit words mod 2^bits: uniform on Z_{2^bits}."""
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(bytes(8 * length)), dtype="<u8").astype(np.uint64)
    return words & modulus_mask(bits)


def modulus_mask(bits: int) -> np.uint64:
    """2^bits − 1 as a uint64 (reduction mod 2^bits is `& modulus_mask(bits)` on wrapping uint64 arithmetic)."""
    return np.uint64((1 << bits) - 1)


def _nonce(sender: int, receiver: int, round_number: int) -> bytes:
    return _NONCE.pack(sender, receiver, round_number)


def seal(key: bytes, plaintext: bytes, sender: int, receiver: int, round_number: int) -> bytes:
    """ChaCha20-Poly1305 ciphertext (plaintext + 16-byte tag) from `sender` to `receiver` in this round."""
    nonce = _nonce(sender, receiver, round_number)
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, nonce)


def open_sealed(key: bytes, ciphertext: bytes, sender: int, receiver: int, round_number: int) -> bytes:
    """The plaintext of `seal`; raises `cryptography.exceptions.InvalidTag` if anything was altered or misrouted."""
    nonce = _nonce(sender, receiver, round_number)
    return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, nonce)


__all__ = ["KEY_BYTES", "KeyPair", "derive_key", "expand_mask", "modulus_mask", "open_sealed", "seal",
           "secret_bytes"]
