"""End-to-end runs on tiny data: every algorithm trains, evaluates and writes the run folder."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from fedge.commands import recsys as command
from fedge.config import ConfigError, build, load_yaml
from fedge.core.streams import Streams
from fedge.errors import DataError
from fedge.output import read_jsonl
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.algorithms.base import Context
from fedge.recsys.config import RecsysConfig
from fedge.recsys.draws import Draws
from fedge.recsys.runner import evaluate, prepare, run, select_clients
from fedge.runfolder import Diverged


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_writes_a_run_folder(tiny, tiny_config, tmp_path, algorithm: str) -> None:
    cfg = tiny_config(tmp_path, algorithm=algorithm)
    result = run(cfg, tiny)
    summary = result.summary
    out = cfg.out_dir
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1, 2] and records == result.history
    for part in ("val", "test"):
        assert 0.0 <= summary[f"{part}_hr@10"] <= 1.0 and 0.0 <= summary[f"{part}_ndcg@10"] <= summary[f"{part}_hr@10"]
    best = next(r for r in records if r["round"] == summary["best_round"])  # the summary reports the chosen round
    assert all(summary[k] == best[k] for k in best if k.startswith(("val_", "test_")))
    assert "hr@10" not in summary and summary["rounds_done"] == 2 and summary["stopped"] is None
    saved = json.loads((out / "summary.json").read_text())
    assert saved["config"]["algorithm"] == algorithm and saved["test_hr@10"] == summary["test_hr@10"]
    assert saved["environment"]["torch"] == torch.__version__
    assert build(RecsysConfig, load_yaml(out / "config.yaml")).algorithm == algorithm  # loadable with --config
    central = algorithm.startswith("central")
    assert (summary["mb_up"] == 0) == central and (summary["mb_down"] == 0) == central
    assert (summary["mb_peer"] > 0) == algorithm.startswith("dfed")
    link = "device-edge" if algorithm.startswith("dfed") else "device-server"
    assert (summary["bytes_by_link"][link] > 0) == (not central)
    previous: dict[str, int] = {}
    for record in records:  # every byte that crossed is up, down or between peers, and counted in its link
        assert math.isclose(record["mb_up"] + record["mb_down"] + record["mb_peer"],
                            (sum(record["bytes_by_link"].values()) - sum(previous.values())) / 1e6)
        previous = record["bytes_by_link"]
    assert summary["bytes_by_link"] == records[-1]["bytes_by_link"]
    assert math.isclose(summary["mb_total"], summary["mb_up"] + summary["mb_down"] + summary["mb_peer"])
    emb = torch.load(out / "item_embeddings.pt")
    assert emb["item_embeddings"].shape[-2] == tiny.num_items and len(emb["item_ids"]) == tiny.num_items
    topk = json.loads((out / "topk.json").read_text())
    assert topk["k"] == 10 and len(topk["users"]) == tiny.num_users
    for raw_user, items in topk["users"].items():
        u = int(raw_user) - 100
        rated_raw = set((tiny.item[tiny.user == u] + 500).tolist())
        assert len(items) == 10 and len(set(items)) == 10
        assert len(set(items) & rated_raw) <= 2  # only the validation and test items may come back


def test_explicit_protocol_reports_rmse(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path, data__protocol="explicit", train__rounds=2)
    summary = run(cfg, tiny).summary
    assert "val_hr@10" not in summary and 0.0 < summary["val_rmse"] < 5.0 and 0.0 < summary["test_rmse"] < 5.0


def test_runs_are_deterministic_under_a_seed(tiny, tiny_config, tmp_path) -> None:
    a = run(tiny_config(tmp_path / "a"), tiny, write=False).summary
    b = run(tiny_config(tmp_path / "b"), tiny, write=False).summary
    assert (a["test_hr@10"], a["val_ndcg@10"], a["mb_up"]) == (b["test_hr@10"], b["val_ndcg@10"], b["mb_up"])
    assert not (tmp_path / "a").exists()  # write=False writes nothing


def test_client_sampling_takes_a_fraction_of_the_users(tiny, tiny_config, tmp_path) -> None:
    picked = select_clients(Streams(0), 3, 100, 25)
    assert len(picked) == 25 and len(set(picked.tolist())) == 25 and torch.equal(picked, picked.sort().values)
    assert torch.equal(picked, select_clients(Streams(0), 3, 100, 25))
    assert not torch.equal(picked, select_clients(Streams(0), 4, 100, 25))
    assert torch.equal(select_clients(Streams(0), 3, 100, 100), torch.arange(100))
    history = run(tiny_config(tmp_path, train__client_fraction=0.5), tiny, write=False).history
    assert [r["clients"] for r in history] == [6, 6]


def test_training_improves_over_initialisation(tiny, tiny_config, tmp_path) -> None:
    cfg = tiny_config(tmp_path, algorithm="central-mf", train__rounds=30, train__lr=0.05)
    trained = run(cfg, tiny, write=False).summary
    untrained = run(tiny_config(tmp_path, algorithm="central-mf", train__rounds=1, train__lr=1e-6), tiny,
                    write=False).summary
    assert trained["val_hr@10"] > untrained["val_hr@10"] and trained["test_hr@10"] > untrained["test_hr@10"]


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    argv = []
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_command_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(DataError, match=f"ratings.csv not found in {tmp_path}"):
        command.main(_args(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="algorithm: unknown recsys algorithm 'nope' \\(choose from fedmf, "):
        command.resolve(_args(algorithm="nope"))
    with pytest.raises(ConfigError, match="unknown config key train.lrr"):
        command.resolve(_args(set="train.lrr=1"))


def test_local_training_options_change_training(tiny, tiny_config, tmp_path) -> None:
    from fedge.recsys.algorithms.base import Context
    from fedge.recsys.runner import prepare

    tables = []
    for opts in ({}, {"train__local_optimizer": "sgd", "train__lr": 0.5}, {"train__user_epochs": 1}):
        cfg = tiny_config(tmp_path, **opts)
        _, data = prepare(cfg, tiny)
        algo = ALGORITHMS.create("fedmf", Context(cfg, data))
        state = algo.init_state(torch.Generator().manual_seed(0))
        algo.server_aggregate(state, algo.client_round(state, torch.arange(data.num_users), 1), 1)
        assert torch.isfinite(state.shared["item"]).all()
        tables.append(state.shared["item"].clone())
    assert not torch.allclose(tables[0], tables[1]) and not torch.allclose(tables[0], tables[2])


def _fit_loss(algo, state, data, users) -> float:
    """Mean training loss of `users` under `state`, on fixed negatives."""
    from fedge.recsys.local import client_mean_loss, make_batch, make_copies, make_pairs

    batch = make_batch(data, users, 4, Draws(Streams(9), "test"))
    pairs = make_pairs(batch.client, batch.item, data.num_items)
    copies = make_copies(state.user[users], state.shared, pairs, expand_dense=False)
    with torch.no_grad():
        return float(client_mean_loss(algo.model, copies, batch, pairs, torch.arange(len(batch.item)),
                                      data.protocol, 0.0)) / len(users)


@pytest.mark.parametrize("algorithm", ["fedmf", "fedncf", "dfedncf"])
def test_eval_refit_fits_user_rows_without_touching_training(tiny, tiny_config, tmp_path, algorithm: str) -> None:
    from fedge.recsys.algorithms.base import Context
    from fedge.recsys.runner import prepare

    cfg = tiny_config(tmp_path, algorithm=algorithm, train__eval_user_epochs=20, train__lr=0.05)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create(algorithm, Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    algo.server_aggregate(state, algo.client_round(state, torch.arange(data.num_users), 1), 1)
    if algorithm.startswith("dfed"):  # score each user against its own edge's model
        view = algo.edge_state
    else:
        def view(s, _edge):
            return s
    before = state.user.clone()
    shared_before = {k: v.clone() for k, v in state.shared.items()}
    scoring = algo.scoring_state(state, Draws(Streams(4), "recsys-refit", 1))
    assert torch.equal(state.user, before)  # the training state is untouched
    assert all(torch.equal(state.shared[k], v) for k, v in shared_before.items())
    assert scoring.shared is state.shared and not torch.allclose(scoring.user, before)
    for edge in range(cfg.decentralized.num_edges if algorithm.startswith("dfed") else 1):
        users = (torch.nonzero(algo.edge_of_user == edge).flatten() if algorithm.startswith("dfed")
                 else torch.arange(data.num_users))
        refit = _fit_loss(algo, view(scoring, edge), data, users)
        assert refit < _fit_loss(algo, view(state, edge), data, users)
    off = ALGORITHMS.create(algorithm, Context(tiny_config(tmp_path, algorithm=algorithm), data))
    assert off.scoring_state(state, Draws(Streams(4), "recsys-refit", 1)) is state


def test_eval_refit_leaves_the_training_trajectory_alone(tiny, tiny_config, tmp_path) -> None:
    plain = run(tiny_config(tmp_path / "a", algorithm="fedncf", train__rounds=3), tiny)
    refit = run(tiny_config(tmp_path / "b", algorithm="fedncf", train__rounds=3, train__eval_user_epochs=3), tiny)
    losses = [[r["loss"] for r in read_jsonl(p / "metrics.jsonl")] for p in (tmp_path / "a/run", tmp_path / "b/run")]
    assert losses[0] == losses[1] and plain.summary["mb_up"] == refit.summary["mb_up"]
    assert all(torch.equal(plain.state.shared[k], refit.state.shared[k]) for k in plain.state.shared)


def test_nan_scores_never_rank_the_positive_first(tiny, tiny_config, tmp_path) -> None:
    """Issue 18: NaN compares false, so a model scoring NaN ranked every positive first (HR@10 = 1.0)."""
    cfg = tiny_config(tmp_path)
    _, data = prepare(cfg, tiny)
    algo = ALGORITHMS.create("fedmf", Context(cfg, data))
    state = algo.init_state(torch.Generator().manual_seed(0))
    assert 0 <= evaluate(algo, state, data, Draws(Streams(0), "eval"))["val_hr@10"] <= 1
    state.shared["item"][3] = float("nan")
    with pytest.raises(Diverged, match="round 7: the model's scores include nan — the model diverged; lower x"):
        evaluate(algo, state, data, Draws(Streams(0), "eval"), "round 7", "lower x")
