"""The `secure:` section of `fedge run` (docs/secure.md). Off by default.

* `secagg` / `secagg+` — secure aggregation (Bonawitz et al., CCS 2017; Bell et al., CCS 2020): each device clips
  its weighted update coordinate-wise to [−clip, clip], quantizes it to `value_bits`-bit integers and uploads it
  masked in Z_{2^bits}; the server learns only the sum over the devices that finished the round. `secagg` shares
  secrets with every other participant, `secagg+` with `neighbours` of them (a random k-regular graph); a secret
  needs `threshold` shares to be rebuilt. `dropout` simulates devices leaving mid-protocol (per stage).
* `ckks` — homomorphic encryption of uploads (`fedge.secure.he.Ckks`; fedavg: `he_averaging.EncryptedAveraging`;
  hfl's device → edge uploads: `he_edges.EncryptedUploads`):
  the server adds CKKS ciphertexts with the public context only, devices decrypt. `clip` bounds each coordinate of
  an update. `paillier` is a library (`fedge.secure.he.Paillier`) and refused by `fedge run`: too slow for whole
  models (below).

Checks that need other sections (threshold against the number of devices, headroom for the number of summands,
which algorithms can aggregate securely) are in `ExperimentConfig.validate`, through `check_against`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fedge.config import BelowOne, PositiveFloat, PositiveInt, Range, check
from fedge.secure.quantize import check_headroom

# Why an algorithm cannot use secure aggregation: its aggregate is not a weighted sum at one aggregator.
NOT_A_WEIGHTED_SUM = {
    "dpmn": "each device regularizes towards its neighbours' individual models (no sum is formed)",
    "dpmn-r": "each device regularizes towards its neighbours' individual models (no sum is formed)",
    "dpcg": "each device regularizes towards its neighbours' individual models (no sum is formed)",
    "dpmp": "each device regularizes towards its neighbours' individual models (no sum is formed)",
    "dfl": "every device averages its own neighbours' models: there is no aggregator to hide them from",
    "local": "nothing is uploaded",
}
SECURE_ALGORITHMS = ("fedavg", "hfl")  # secagg / secagg+ wired (hfl: device → edge); fedmf is not yet
HE_ALGORITHMS = ("fedavg", "hfl")  # ckks wired (hfl: device → edge)
PAILLIER_IN_RUNS = ("secure.aggregation: paillier is a library only (fedge.secure.he.Paillier), not for fedge run: "
                    "encryption takes ~20 ms per 2048-bit ciphertext of 43 values with gmpy2 (~0.14 s without), "
                    "~10 s per device per round for LeNet-5's 21,386 parameters; use ckks")


@dataclass
class SecureConfig:
    aggregation: Literal["none", "secagg", "secagg+", "ckks", "paillier"] = "none"
    threshold: PositiveInt | None = None  # t; null: a majority of each neighbourhood (⌊k/2⌋ + 1)
    neighbours: Annotated[int, Range(2)] = 8  # k of secagg+ (even); at least the participants − 1: complete
    bits: Annotated[int, Range(2, 64)] = 32  # sums live in Z_{2^bits}; masked values take ceil(bits/8) bytes
    value_bits: Annotated[int, Range(1, 62)] = 16  # quantization: 2^value_bits − 1 levels over [−clip, clip]
    clip: PositiveFloat = 1.0  # per-coordinate clip of the (weight-scaled) update before quantization
    dropout: BelowOne = 0.0  # simulated: at each protocol stage each remaining participant drops with this chance
    key_source: Literal["seeded", "system"] = "seeded"  # keys from the run's streams (reproducible) or os.urandom

    def validate(self) -> None:
        check(not (self.aggregation == "secagg+" and self.neighbours % 2),
              f"secure.neighbours: a random k-regular (ring) graph needs an even k, got {self.neighbours}")
        check(not self.masking or self.value_bits < self.bits,
              f"secure.value_bits: {self.value_bits} leaves no headroom in secure.bits = {self.bits}")

    @property
    def masking(self) -> bool:
        return self.aggregation in ("secagg", "secagg+")

    def neighbourhood(self, participants: int) -> int:
        """How many devices a participant shares its secrets with, among `participants`."""
        others = participants - 1
        return others if self.aggregation == "secagg" else min(self.neighbours, others)

    def threshold_for(self, participants: int) -> int:
        """t for a round with this many participants: as configured, else a majority of the neighbourhood."""
        if self.threshold is not None:
            return self.threshold
        return self.neighbourhood(participants) // 2 + 1

    @property
    def encrypting(self) -> bool:
        return self.aggregation in ("ckks", "paillier")

    def check_against(self, algorithms: list[str], devices: int, adaptive_clipping: bool,
                      user_dp: bool = False) -> None:
        """One-line ConfigErrors for settings impossible with the rest of the experiment. `user_dp` is accepted with
        every scheme: the devices add their share of the noise before masking or encrypting."""
        if self.aggregation == "none":
            return
        for name in algorithms:
            reason = NOT_A_WEIGHTED_SUM.get(name)
            check(reason is None, f"secure.aggregation: {self.aggregation} needs a weighted sum at an aggregator; "
                                  f"{name} has none: {reason}")
            wired = HE_ALGORITHMS if self.encrypting else SECURE_ALGORITHMS
            check(name in wired, f"secure.aggregation: {self.aggregation} is wired for {', '.join(wired)} only, "
                                 f"not {name}")
        check(self.aggregation != "paillier", PAILLIER_IN_RUNS)
        check(not adaptive_clipping, "privacy.adaptive_clipping: not with secure aggregation (the count of clipped "
                                     "updates would need its own distributed noise)")
        if self.encrypting:
            return
        neighbourhood = self.neighbourhood(devices)
        check(self.threshold is None or self.threshold <= neighbourhood,
              f"secure.threshold: {self.threshold} is larger than the neighbourhood of a device ({neighbourhood} "
              f"of {devices} devices)")
        check_headroom(devices, self.value_bits, self.bits)


__all__ = ["SecureConfig"]
