"""The round loop: pruning invariants, byte accounting, determinism, trainer equivalence."""

from __future__ import annotations

import torch

from fedge.algorithms import ALGORITHMS, create
from fedge.config import build
from fedge.core import codec
from fedge.experiment import ExperimentConfig
from fedge.runtimes.rounds import RoundTimer, run_round
from fedge.runtimes.setup import TRAIN_STREAM, initial_state, make_context, prepare, stream
from fedge.runtimes.simulator import simulate
from fedge.runtimes.trainer import BatchedTrainer, SequentialTrainer

TINY = {"rounds": 3, "data": {"devices": 6, "partition": "shards:2"}, "train": {"epochs": 1},
        "pruning": {"ramp_rounds": 2}, "neighbours": {"k_max": 2, "bootstrap_probes": 3}}


def tiny(**changes: object) -> ExperimentConfig:
    raw = {**TINY, **changes}
    return build(ExperimentConfig, raw)


def test_pruned_coordinates_stay_zero_and_density_reaches_target() -> None:
    config = tiny(rounds=4, pruning={"ramp_rounds": 2, "tolerance": 1.0})  # never pause: exact schedule
    setup = prepare(config)
    ctx, state = make_context(config, setup), initial_state(config, setup)
    trainer = BatchedTrainer(setup.model, setup.data.devices, config.train)
    algorithm, generator = create("dpmn"), stream(0, TRAIN_STREAM)
    for _ in range(config.rounds):
        run_round(state, ctx, algorithm, trainer, generator, RoundTimer())
        assert bool((state.bank[~state.masks] == 0).all())
    prunable = ctx.prunable
    kept = state.masks[:, prunable].float().mean(dim=1)
    assert torch.allclose(kept, torch.full_like(kept, 0.5), atol=0.01)


def test_training_never_moves_pruned_coordinates() -> None:
    config = tiny()
    setup = prepare(config)
    n, d = config.data.devices, setup.model.dim
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, d, generator=g) < 0.5
    bank = setup.initial.expand(n, d).clone() * masks
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        trained = bank.clone()
        trainer_cls(setup.model, setup.data.devices, config.train).train_all(
            trained, masks, None, torch.arange(n), None, torch.Generator().manual_seed(1))
        assert bool((trained[~masks] == 0).all())
        assert not torch.equal(trained[masks], bank[masks])


def test_sequential_and_batched_trainers_agree() -> None:
    config = tiny()
    setup = prepare(config)
    n = config.data.devices
    results = []
    for trainer_cls in (SequentialTrainer, BatchedTrainer):
        bank = setup.initial.expand(n, -1).clone()
        masks = torch.ones_like(bank, dtype=torch.bool)
        trainer = trainer_cls(setup.model, setup.data.devices, config.train)
        losses = trainer.train_all(bank, masks, None, torch.arange(n), None, torch.Generator().manual_seed(1))
        results.append((bank, losses, trainer.evaluate_all(bank)[0]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def test_round_bytes_equal_encoded_payload_lengths() -> None:
    config = tiny(rounds=1)
    setup = prepare(config)
    for name in ("dpmn", "dfl"):
        ctx, state = make_context(config, setup), initial_state(config, setup)
        trainer = BatchedTrainer(setup.model, setup.data.devices, config.train)
        algorithm = create(name)
        metrics = run_round(state, ctx, algorithm, trainer, stream(0, TRAIN_STREAM), RoundTimer())
        payload_bytes = 0
        for _, j in torch.nonzero(state.neighbours).tolist():
            payload = codec.encode(state.references[j], state.reference_masks[j] if name == "dpmn" else None)
            payload_bytes += len(payload)
            decoded = codec.decode(payload)
            assert torch.equal(decoded.values, state.references[j])
        if name == "dfl":
            assert metrics["bytes_round"] == payload_bytes
        else:
            # DPMN also pays for the first round's similarity probes (head sketches of the probed candidates).
            assert metrics["bytes_round"] > payload_bytes
            h0, h1 = ctx.head
            probes = int((state.scored_round == state.round).sum()) - int(state.neighbours.sum())
            assert probes >= 0
            assert metrics["bytes_round"] - payload_bytes <= (probes + int(state.neighbours.sum())) * \
                codec.encoded_size(h1 - h0, h1 - h0)


def test_bitwise_determinism_for_every_algorithm() -> None:
    config = tiny(rounds=2)
    for name in ALGORITHMS:
        first = simulate(config, name, None)
        second = simulate(config, name, None)
        assert first["_history"] == second["_history"], name
        assert torch.equal(first["_state"].bank, second["_state"].bank), name


def test_fedavg_keeps_one_global_model_and_counts_both_directions() -> None:
    config = tiny(rounds=1)
    result = simulate(config, "fedavg", None)
    bank = result["_state"].bank
    assert torch.equal(bank, bank[0].expand_as(bank))
    dense = codec.encoded_size(bank.shape[1], bank.shape[1], sparse=False)
    assert result["bytes_total"] == 2 * config.data.devices * dense
