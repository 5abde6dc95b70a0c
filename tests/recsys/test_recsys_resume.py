"""`fedge recsys` checkpoint and resume: a run stopped after round k and resumed equals an uninterrupted one for every
algorithm (so nothing but the checkpointed state carries between rounds: no generator state), and `--resume` refuses
corrupt, foreign and overtaken checkpoints. The SIGKILL-and-resume test is in tests/test_interruptions.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fedge import cli
from fedge.config import ConfigError
from fedge.output import read_jsonl
from fedge.recsys import checkpoint
from fedge.recsys.algorithms import ALGORITHMS
from fedge.recsys.runner import run

WALL_CLOCK = ("round_s", "mean_round_s", "environment", "run_id")


def _timeless(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in records]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_resumed_run_equals_uninterrupted(tiny, tiny_config, tmp_path: Path, algorithm: str) -> None:
    """Server optimiser moments matter too: fedmf/fedncf run with FedAdam here, so a resume that dropped them would
    differ from round 3 on."""
    opts = {"algorithm": algorithm, "train__rounds": 4, "eval_every": 1}
    if not algorithm.startswith("central") and algorithm != "fedmeta":
        opts["train__server_optimizer"] = "adam"
        opts["train__server_lr"] = 0.05
    straight = run(tiny_config(tmp_path / "straight", **opts), tiny)
    first = run(tiny_config(tmp_path / "resumed", **{**opts, "train__rounds": 2}), tiny, checkpoint_every=1)
    assert checkpoint.load(tmp_path / "resumed" / "run" / checkpoint.FILENAME).round == 2
    resumed = run(tiny_config(tmp_path / "resumed", **opts), tiny, checkpoint_every=1, resume=True)
    assert _timeless(resumed.history) == _timeless(straight.history)
    written = read_jsonl(tmp_path / "resumed" / "run" / "metrics.jsonl")
    assert _timeless(written) == _timeless(read_jsonl(tmp_path / "straight" / "run" / "metrics.jsonl"))
    assert {k: v for k, v in resumed.summary.items() if k not in WALL_CLOCK + ("config",)} == \
        {k: v for k, v in straight.summary.items() if k not in WALL_CLOCK + ("config",)}
    assert resumed.summary["run_id"] == first.summary["run_id"]  # the same run, continued
    emb = [torch.load(p / "run" / "item_embeddings.pt")["item_embeddings"] for p in (tmp_path / "straight",
                                                                                    tmp_path / "resumed")]
    assert torch.equal(emb[0], emb[1])
    for name in ("topk.json",):
        assert (tmp_path / "straight" / "run" / name).read_bytes() == (tmp_path / "resumed" / "run" / name).read_bytes()


def test_a_run_that_stopped_early_stays_stopped_and_exports_its_chosen_round(small, tiny_config,
                                                                            tmp_path: Path) -> None:
    """The checkpoint carries the best validation round's state: resuming an early-stopped run trains no further
    round and exports the same top-K lists."""
    cfg = tiny_config(tmp_path, algorithm="central-mf", train__rounds=40, train__patience=2, train__lr=0.3)
    done = run(cfg, small, checkpoint_every=3)
    topk = (cfg.out_dir / "topk.json").read_bytes()
    assert done.summary["stopped"] and done.summary["best_round"] < len(done.history) < 40
    again = run(cfg, small, resume=True)
    assert _timeless(again.history) == _timeless(done.history)
    for key in ("stopped", "best_round", "val_hr@10", "test_hr@10"):
        assert again.summary[key] == done.summary[key], key
    assert (cfg.out_dir / "topk.json").read_bytes() == topk


def test_resume_at_the_last_round_rewrites_the_same_result(tiny, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, train__rounds=2)
    done = run(cfg, tiny, checkpoint_every=2)
    again = run(cfg, tiny, resume=True)
    assert _timeless(again.history) == _timeless(done.history)
    for key in ("val_hr@10", "test_hr@10", "best_round", "run_id"):
        assert again.summary[key] == done.summary[key], key


def test_resume_refuses_bad_and_overtaken_checkpoints(tiny, tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, train__rounds=2)
    run(cfg, tiny, checkpoint_every=1)
    out = cfg.out_dir
    path = out / checkpoint.FILENAME
    good = path.read_bytes()
    with pytest.raises(ConfigError, match="another config"):
        run(tiny_config(tmp_path, train__rounds=2, seed=5), tiny, resume=True)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        run(cfg, tiny, resume=True)
    path.write_bytes(good)
    # A later run in the same folder (no checkpointing) replaces the folder: nothing left to resume from.
    later = run(cfg, tiny)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run(cfg, tiny, resume=True)
    # The old code left the stale checkpoint beside the later results: resuming from it is refused, untouched.
    path.write_bytes(good)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="comes from a later run"):
        run(cfg, tiny, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "summary.json").read_text())["run_id"] == later.summary["run_id"]
    # metrics that do not continue the checkpoint (another run's rounds) are refused as well
    (out / "summary.json").unlink()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(ConfigError, match="does not continue"):
        run(cfg, tiny, resume=True)


def test_cli_resume_takes_the_checkpoints_config(tmp_path: Path, ratings_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    real_save = checkpoint.save

    def keep_round_one(path: Path, saved: checkpoint.RecCheckpoint) -> None:
        real_save(path, saved)
        if saved.round == 1:
            shutil.copy(path, tmp_path / "round1.pt")

    monkeypatch.setattr(checkpoint, "save", keep_round_one)
    flags = ["--data-dir", str(ratings_dir), "--no-progress", "--set", "data.eval_negatives=20", "--set",
             "model.dim=4", "--algorithm", "fedncf"]
    assert cli.main(["recsys", *flags, "--rounds", "2", "--checkpoint-every", "1", "--out", str(out)]) == 0
    reference = read_jsonl(out / "metrics.jsonl")
    # the folder as a kill after round 1 leaves it: the round-1 checkpoint, one round of metrics, no summary
    shutil.copy(tmp_path / "round1.pt", out / checkpoint.FILENAME)
    (out / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (out / "summary.json").unlink()
    capsys.readouterr()
    assert cli.main(["recsys", "--resume", str(out), "--no-progress"]) == 0
    assert _timeless(read_jsonl(out / "metrics.jsonl")) == _timeless(reference)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["algorithm"] == "fedncf" and summary["duplicates_removed"] == 0
    capsys.readouterr()
    assert cli.main(["recsys", "--resume", str(out), "--set", "seed=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another config" in err and len(err.splitlines()) == 1
    assert cli.main(["recsys", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err

