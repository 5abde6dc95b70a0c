"""Partition specs from users (issue 18): `dirichlet:nan` / `inf` used to hang, tiny α crashed with a RuntimeError or
ZeroDivisionError; a spec is now a one-line ConfigError when it cannot work, and any finite α > 0 partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedge.cli import main
from fedge.config import ConfigError
from fedge.core.streams import generator
from fedge.data.federated import load_federated
from fedge.data.partition import PartitionSpec, _sample_dirichlet, partition
from fedge.experiment import DataConfig

LABELS = torch.arange(1797) % 10  # the digits' size and ten classes


@pytest.mark.parametrize("text", ["dirichlet:nan", "dirichlet:inf", "dirichlet:-inf", "dirichlet:NaN",
                                  "shards:nan", "shards:inf"])
def test_non_finite_partition_is_a_config_error_at_parse_time(text: str) -> None:
    with pytest.raises(ConfigError, match=f"^partition: '{text}' needs a finite number after ':'$"):
        PartitionSpec.parse(text)


@pytest.mark.parametrize("text,needle", [("dirichlet:0", "positive number"), ("dirichlet:-1", "positive number"),
                                         ("shards:0", "positive integer"), ("shards:1.5", "positive integer"),
                                         ("dirichlet:x", "needs a number"), ("dirichlet", "is not one of")])
def test_other_bad_specs_stay_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        PartitionSpec.parse(text)


@pytest.mark.parametrize("alpha", [5e-324, 1e-300, 1e-3, 0.3, 1.0, 2.5, 1e300, 1.7e308])
def test_dirichlet_sample_is_a_finite_point_of_the_simplex(alpha: float) -> None:
    for seed in range(5):
        sample = _sample_dirichlet(alpha, 6, torch.Generator().manual_seed(seed))
        assert sample.dtype == torch.float64 and bool(torch.isfinite(sample).all()) and bool((sample >= 0).all())
        assert float(sample.sum()) == pytest.approx(1.0, abs=1e-12)
        if alpha <= 1e-300:  # the limit α → 0: one part takes everything
            assert sorted(sample.tolist())[-1] == 1.0


@pytest.mark.parametrize("alpha", ["0.001", "1e-300"])
def test_tiny_alpha_partitions_instead_of_crashing(alpha: str) -> None:
    # Before: RuntimeError (0.001, seeds 1, 2, 4, 5) and ZeroDivisionError (1e-300, every seed) from load_federated.
    cfg = DataConfig(devices=4, partition=f"dirichlet:{alpha}")
    for seed in range(6):
        data = load_federated(cfg, generator(seed, "data").initial_seed())
        assert len(data.devices) == 4 and min(data.train_sizes.tolist()) >= 1
        if alpha == "1e-300":  # the limit α → 0: each class goes whole to one device
            label_sets = data.label_sets()
            assert sum(len(s) for s in label_sets) == len(set().union(*label_sets)) == 10


def test_tiny_alpha_with_more_devices_than_classes_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dirichlet:0\.001 left a device with fewer than 2 samples after 100 "
                                          r"draws \(10 classes over 20 devices\)"):
        partition(LABELS, 20, PartitionSpec.parse("dirichlet:0.001"), torch.Generator().manual_seed(0))


@pytest.mark.parametrize("text", ["shards:1000", "shards:1e300"])
def test_more_shards_than_samples_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="leaves a device with fewer than 2 of the dataset's 1797 samples"):
        partition(LABELS, 4, PartitionSpec.parse(text), torch.Generator().manual_seed(0))


def test_usual_alphas_still_partition_everything() -> None:
    for alpha in (0.1, 0.5, 1.0, 3.0):
        parts = partition(LABELS, 10, PartitionSpec("dirichlet", alpha), torch.Generator().manual_seed(1))
        assert sorted(torch.cat(parts).tolist()) == list(range(len(LABELS)))


def _no_run(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("the partition was accepted: the command went on to load data / run")


@pytest.mark.parametrize("command,args", [
    ("run", ["--rounds", "1", "--devices", "4", "--partition", "dirichlet:nan"]),
    ("run", ["--rounds", "1", "--devices", "4", "--partition", "dirichlet:inf"]),
    ("reproduce", ["--rounds", "1", "--seeds", "1", "--set", "data.partition=dirichlet:nan"]),
    ("reproduce", ["--rounds", "1", "--seeds", "1", "--set", "data.partition=dirichlet:inf"]),
])
def test_non_finite_partition_exits_2_without_hanging(command: str, args: list[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Before: the Gamma sampler's rejection loop never accepted a nan/inf draw (the tripwires stop that here).
    import fedge.reproduce.pool
    import fedge.runtimes.setup

    monkeypatch.setattr(fedge.runtimes.setup, "prepare", _no_run)
    monkeypatch.setattr(fedge.reproduce.pool, "run_grid", _no_run)
    code = main([command, "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "data.partition: 'dirichlet:" in err[0] and "needs a finite number" in err[0], err
