"""How rounds run: the round loop (`rounds`), written once and driven by the in-process simulator (`simulator`);
the peer-exchange protocol (`sharing`), trainers, fault and latency models, setup and checkpoints. Messages travel
over the transports of `fedge.messaging` (direct or loopback, in one process)."""
