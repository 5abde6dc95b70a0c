"""Speed of this checkout against an earlier revision, side by side in one run, each measurement in a fresh process.

    python -m benchmarks.revisions --baseline a6c030c --repeats 3 --rounds 5 --threads 2

For every repeat, workload (LeNet-5 100x600 and 500x64) and algorithm (fedavg, dfl, dpmn) the contenders run back
to back, each in its own process: the baseline revision's fedge (its `src/` extracted with `git archive`), this
checkout with the direct transport, and (with `--loopback`) this checkout with the loopback transport. Samples/s
count rounds 2.. of `--rounds`. Ratios are taken within a repeat (so load from other processes hits both alike)
and reported as min / median / max. Writes benchmarks/results/revisions-<baseline>.json with the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from fedge.runfolder import environment

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("lenet5-100x600", "lenet5-500x64")
ALGORITHMS = ("fedavg", "dfl", "dpmn")


def extract(revision: str, into: Path) -> Path:
    """The `src/` tree of `revision`, extracted under `into`."""
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, workload: str, algorithm: str, args: argparse.Namespace, transport: str | None) -> dict:
    command = [sys.executable, "-m", "benchmarks.time_simulate", "--workload", workload, "--algorithm", algorithm,
               "--rounds", str(args.rounds), "--threads", str(args.threads)]
    if transport:
        command += ["--transport", transport]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["fedge"].startswith(str(src)):
        raise RuntimeError(f"measured {result['fedge']}, not the fedge under {src}")
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="a6c030c", help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loopback", action="store_true", help="also measure this checkout's loopback transport")
    parser.add_argument("--only", action="append", help="workload(s) to run (default: both LeNet-5 ones)")
    parser.add_argument("--algorithm", action="append", dest="algorithms",
                        help="algorithm(s) to run (default: fedavg, dfl, dpmn)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workloads = args.only or list(WORKLOADS)
    contenders: list[tuple[str, str | None]] = [("baseline", None), ("direct", "direct")]
    if args.loopback:
        contenders.append(("loopback", "loopback"))
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"baseline": extract(args.baseline, Path(tmp)), "direct": ROOT / "src", "loopback": ROOT / "src"}
        for repeat in range(args.repeats):
            for workload in workloads:
                for algorithm in args.algorithms or ALGORITHMS:
                    key = f"{workload}/{algorithm}"
                    for name, transport in contenders:
                        value = measure(sources[name], workload, algorithm, args, transport)["samples_per_s"]
                        samples.setdefault(key, {}).setdefault(name, []).append(value)
                        print(f"repeat {repeat + 1} {key} {name}: {value:,.0f} samples/s", flush=True)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "baseline": args.baseline, "environment": environment(),
                              "rounds": args.rounds, "threads": args.threads, "results": {}}
    for key, by_name in samples.items():
        entry: dict[str, Any] = {name: spread(values) for name, values in by_name.items()}
        for name in by_name:
            if name != "baseline":
                entry[f"{name}_over_baseline"] = spread([a / b for a, b in zip(by_name[name], by_name["baseline"],
                                                                               strict=True)])
        if "loopback" in by_name:
            entry["loopback_over_direct"] = spread([a / b for a, b in zip(by_name["loopback"], by_name["direct"],
                                                                          strict=True)])
        report["results"][key] = entry
        ratio = entry["direct_over_baseline"]
        print(f"{key}: direct / baseline median {ratio['median']:.3f} (min {ratio['min']:.3f}, max {ratio['max']:.3f})"
              + (f"; loopback / direct {entry['loopback_over_direct']['median']:.3f}" if "loopback" in by_name
                 else ""))
    out = args.out or ROOT / "benchmarks" / "results" / f"revisions-{args.baseline}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
