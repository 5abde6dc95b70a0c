"""Start a fedge command over several processes with torchrun's own launcher (torch.distributed.run): the same as
`torchrun --nproc-per-node P -m fedge run ...`, with the same flags for the command it starts. One machine:

    fedge launch --nproc 2 run --algorithm dpmn,dfl --out runs/two-processes

Two machines (run one line on each; HOST is the first machine's address, reachable from the second):

    fedge launch --nproc 2 --nnodes 2 --node-rank 0 --rdzv-endpoint HOST:29400 run --out runs/two-machines
    fedge launch --nproc 2 --nnodes 2 --node-rank 1 --rdzv-endpoint HOST:29400 run --out runs/two-machines

Devices are sharded over the processes in contiguous blocks; the run folder is written by the first process (on
the machine with node rank 0). See fedge.runtimes.distributed.
"""

from __future__ import annotations

import argparse

from fedge.config import ConfigError

LAUNCHABLE = ("run", "recsys")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, default=2, help="processes on this machine (default 2)")
    parser.add_argument("--nnodes", type=int, default=1, help="machines taking part (default 1)")
    parser.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0..nnodes-1")
    parser.add_argument("--rdzv-endpoint", default="127.0.0.1:29400",
                        help="HOST:PORT of the rendezvous (c10d) for several machines (default 127.0.0.1:29400)")
    parser.add_argument("--max-restarts", type=int, default=0, help="restart all processes this often after a failure")
    parser.add_argument("launched", choices=LAUNCHABLE, metavar="COMMAND",
                        help="the fedge command to run in every process: run or recsys (fedmf, fedncf)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="its flags, as for `fedge COMMAND`")


def torchrun_arguments(args: argparse.Namespace) -> list[str]:
    """torchrun's command line for `args` (checked first: one-line errors for impossible values)."""
    if args.nproc < 1:
        raise ConfigError(f"--nproc: at least 1 process, got {args.nproc}")
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise ConfigError(f"--node-rank {args.node_rank} with --nnodes {args.nnodes}: need 0 <= node rank < nnodes")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts: must be >= 0, got {args.max_restarts}")
    host, _, port = args.rdzv_endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--rdzv-endpoint: expected HOST:PORT, got {args.rdzv_endpoint!r}")
    placement = (["--standalone"] if args.nnodes == 1 else
                 ["--nnodes", str(args.nnodes), "--node-rank", str(args.node_rank), "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", args.rdzv_endpoint, "--rdzv-id", "fedge"])
    return [*placement, "--nproc-per-node", str(args.nproc), "--max-restarts", str(args.max_restarts),
            "-m", "fedge", args.launched, *args.arguments]


def main(args: argparse.Namespace) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    argv = torchrun_arguments(args)
    try:
        torchrun(argv)
    except ChildFailedError as failure:
        codes = sorted({f.exitcode for f in failure.failures.values()})
        raise ConfigError(f"a process of `fedge {args.launched}` failed (exit code {', '.join(map(str, codes))}); "
                          "its message is above") from None
    return 0
