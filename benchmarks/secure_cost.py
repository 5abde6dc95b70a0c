"""What secure aggregation and homomorphic encryption cost (docs/secure.md): bytes and seconds next to plaintext.

    python -m benchmarks.secure_cost [--rounds 30] [--paillier-values 1000]

1. fedavg on the offline digits default with 50 devices (LeNet-5, 21,386 parameters): plaintext, SecAgg+ (k = 8)
   and SecAgg (complete graph) — accuracy, upload bytes per round (plaintext `model` messages against the keys,
   shares, masked vectors and unmasking messages) and run seconds;
2. one SecAgg+ (k = 16, t = 8) / SecAgg (t = 25) round of 50 devices on a vector of that size with 30% dropping
   after sharing keys: device and server compute seconds;
3. CKKS weighted averaging of LeNet-5 (28x28, 61,706 parameters) updates from 10 devices: bytes against fp32,
   relative error, encrypt / aggregate / decrypt seconds;
4. Paillier (2048-bit keys) on `--paillier-values` values from 5 devices: the same.

A measurement, not a test; results go to benchmarks/results/ with the machine (`fedge.runfolder.environment()`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedge.config import build
from fedge.experiment import ExperimentConfig
from fedge.messaging import DirectTransport, Ledger
from fedge.models import FlatModel, build_model
from fedge.runfolder import environment
from fedge.runtimes.simulator import simulate
from fedge.secure.he import Ckks, Paillier, run_round
from fedge.secure.quantize import quantize
from fedge.secure.secagg import SecAggSettings, Stage, secure_sum

UPLOAD_KINDS = ("keys", "shares", "masked", "unmask")


def fedavg_runs(rounds: int) -> dict[str, Any]:
    out = {}
    for name, secure in (("plaintext", {}), ("secagg+", {"aggregation": "secagg+"}),
                         ("secagg", {"aggregation": "secagg"})):
        config = build(ExperimentConfig, {"algorithms": ["fedavg"], "rounds": rounds, "data": {"devices": 50},
                                          "secure": secure})
        with tempfile.TemporaryDirectory() as folder:
            summary = simulate(config, "fedavg", Path(folder)).summary
        kinds = summary["bytes_by_kind"]
        upload = kinds["model"] + sum(kinds[k] for k in UPLOAD_KINDS)
        out[name] = {"accuracy_mean": summary["accuracy_mean"], "upload_bytes_per_round": upload / rounds,
                     "bytes_by_kind": kinds, "seconds": summary["seconds"], "rounds": summary["rounds"]}
    plain = out["plaintext"]["upload_bytes_per_round"]
    for name in ("secagg+", "secagg"):
        out[name]["upload_vs_plaintext"] = out[name]["upload_bytes_per_round"] / plain
    return out


def secagg_round(dim: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    inputs = {u: quantize((torch.rand(dim, generator=generator) * 2 - 1) * 0.5, 1.0, 16) for u in range(50)}
    dropping = set(torch.randperm(50, generator=generator)[:15].tolist())
    out = {}
    for name, neighbours, threshold in (("secagg+", 16, 8), ("secagg", None, 25)):
        ledger = Ledger(50)
        result = secure_sum(inputs, SecAggSettings(threshold=threshold, neighbours=neighbours), 1, 0,
                            DirectTransport(ledger), dropouts={Stage.MASKED: dropping})
        out[name] = {"threshold": threshold, "summed": len(result.summed), "seconds": result.seconds,
                     "bytes_by_kind": {k: ledger.bytes_by_kind[k] for k in UPLOAD_KINDS}}
    return out


def he_rounds(paillier_values: int) -> dict[str, Any]:
    dim = FlatModel(build_model("lenet5", (1, 28, 28), 10)).dim
    generator = torch.Generator().manual_seed(0)
    updates = [(torch.randn(dim, generator=generator) * 0.01).double().numpy() for _ in range(10)]
    weights = [int(w) for w in torch.randint(20, 200, (10,), generator=generator)]
    exact = sum(w * u for w, u in zip(weights, updates)) / sum(weights)
    scheme = Ckks()
    mean, cost = run_round(scheme, updates, weights)
    ckks = {"dim": dim, "devices": 10, "ciphertexts_per_device": -(-dim // scheme.slots),
            "upload_bytes_per_device": cost.upload_bytes[0], "upload_vs_fp32": cost.upload_bytes[0] / (4 * dim),
            "aggregate_bytes": cost.download_bytes, "public_context_bytes": len(scheme.public_context_bytes),
            "relative_error": float(np.linalg.norm(mean - exact) / np.linalg.norm(exact)), "seconds": cost.seconds}
    small = [u[:paillier_values] for u in updates[:5]]
    paillier_scheme = Paillier(key_bits=2048)
    mean, cost = run_round(paillier_scheme, small, weights[:5])
    exact = sum(w * u for w, u in zip(weights[:5], small)) / sum(weights[:5])
    paillier = {"dim": paillier_values, "devices": 5, "slots_per_ciphertext": paillier_scheme.slots_per_ciphertext,
                "upload_bytes_per_device": cost.upload_bytes[0],
                "upload_vs_fp32": cost.upload_bytes[0] / (4 * paillier_values),
                "max_abs_error": float(np.abs(mean - exact).max()), "seconds": cost.seconds}
    return {"ckks": ckks, "paillier": paillier}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--paillier-values", type=int, default=1000)
    parser.add_argument("--out", default=f"benchmarks/results/secure-cost-{datetime.date.today()}.json")
    args = parser.parse_args()
    results = {"environment": environment(), "fedavg_digits_50": fedavg_runs(args.rounds),
               "secagg_round_50x21386": secagg_round(21386), "he": he_rounds(args.paillier_values)}
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}, indent=1))


if __name__ == "__main__":
    main()
