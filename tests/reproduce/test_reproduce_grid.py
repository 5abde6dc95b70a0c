"""The grid: which cells a spec needs, how studies share cells, and what the cache key depends on."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.cli import main
from fedge.config import ConfigError, build
from fedge.reproduce.cache import CellCache, run_cell
from fedge.reproduce.grid import GridSpec, build_cells, cell_key, resolved


def test_quick_digits_grid() -> None:
    base, cells = build_cells(build(GridSpec, {"quick": True}))
    assert base.rounds == 15 and base.data.devices == 20 and base.data.dataset == "digits"
    # main: 7 algorithms; δ study: 5 more DPMN cells; devices: 3 algorithms at 10, 50, 100 — per seed, 2 seeds.
    assert len(cells) == 2 * (7 + 5 + 3 * 3)
    assert len({c.key for c in cells}) == len(cells)
    shared = [c for c in cells if c.algorithm == "dpmn" and c.devices == 20 and c.delta == 0.2]
    assert len(shared) == 2 and all(sorted(c.studies) == ["delta", "devices", "main"] for c in shared)
    assert {c.seed for c in cells} == {0, 1}
    assert {c.devices for c in cells if "devices" in c.studies} == {10, 20, 50, 100}
    assert all(c.config["algorithms"] == [c.algorithm] and "out" not in c.config for c in cells)


def test_full_grid_defaults() -> None:
    spec = build(GridSpec, {"dataset": "fmnist", "data_dir": "/data/fm"})
    base, cells = build_cells(spec)
    assert spec.num_seeds == 3 and base.rounds == 50 and base.data.devices == 50
    assert base.data.data_dir == "/data/fm"
    # main 7 + δ 5 extra + devices 5 algorithms × 3 counts other than 50, per seed
    assert len(cells) == 3 * (7 + 5 + 5 * 3)


def test_key_depends_on_the_result_determining_config_only() -> None:
    base, _ = build_cells(build(GridSpec, {"rounds": 2}))
    key = cell_key(resolved(base, "dpmn"), "dpmn")
    assert key == cell_key(resolved(base, "dpmn"), "dpmn")
    base.out = "somewhere/else"
    assert cell_key(resolved(base, "dpmn"), "dpmn") == key  # the output folder does not change a result
    assert cell_key(resolved(base, "dfl"), "dfl") != key
    base.seed = 1
    assert cell_key(resolved(base, "dpmn"), "dpmn") != key
    base.seed, base.train.lr = 0, 0.05
    assert cell_key(resolved(base, "dpmn"), "dpmn") != key
    base.train.lr = 0.1
    assert cell_key(resolved(base, "dpmn"), "dpmn", engine="other-source") != key  # edited engine code


def test_cells_of_another_engine_version_are_refused(tmp_path: Path) -> None:
    _, cells = build_cells(build(GridSpec, {"rounds": 1, "seeds": 1, "algorithms": ["dfl"]}))
    cells[0].engine = "stale-fingerprint"
    with pytest.raises(ConfigError, match="engine source changed"):
        run_cell(cells[0], str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_cache_ignores_files_made_for_something_else(tmp_path: Path) -> None:
    _, cells = build_cells(build(GridSpec, {"rounds": 1, "seeds": 1, "algorithms": ["dpmn", "dfl"]}))
    cache = CellCache(tmp_path)
    cell, other = cells[0], cells[1]
    assert cache.load(cell) is None
    cache.store(cell, {"accuracy_mean": 0.5, "_state": object(), "config": {}}, [{"round": 1}], 1.0)
    assert cache.load(cell)["summary"] == {"accuracy_mean": 0.5}
    cache.path(other.key).write_text(cache.path(cell.key).read_text())  # wrong key inside
    assert cache.load(other) is None
    cache.path(other.key).write_text("{ torn")
    assert cache.load(other) is None


def test_spec_rejects_bad_values() -> None:
    for raw, needle in [({"dataset": "mnist3"}, "mnist3"), ({"seeds": 0}, "seeds"), ({"deltas": [0.2, 3]}, "3"),
                        ({"device_counts": [1]}, "device_counts"), ({"overrides": ["data.bogus=1"]}, "data.bogus")]:
        with pytest.raises(ConfigError, match=needle):
            build_cells(build(GridSpec, raw))


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "mnist3"], "mnist3"),
    (["--algorithms", "dpmn,dpmx"], "dpmx"),
    (["--seeds", "0"], "seeds"),
    (["--workers", "0"], "workers"),
    (["--target", "150"], "target"),
    (["--set", "train.lr=fast"], "train.lr"),
    (["--dataset", "fmnist", "--data-dir", "/nonexistent/fm", "--rounds", "1", "--seeds", "1", "--workers", "1",
      "--algorithms", "dfl", "--device-counts", "50", "--deltas", "0.2"], "/nonexistent/fm"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["reproduce", "--out", str(tmp_path / "o"), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert needle in err[-1] and err[-1].startswith("fedge reproduce: error:")
