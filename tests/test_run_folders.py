"""Run folders are transactional (fedge.runfolder.staging): a rerun into a folder that holds a run keeps it intact
until the new run has finished, `--resume` refuses a folder whose newest results are not its checkpoint's, output
problems are one-line errors found before any data is loaded, and files get the user's umask. The interruption tests
(SIGINT, SIGKILL at several moments) are in tests/test_interruptions.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fedge import cli
from fedge.config import ConfigError
from fedge.output import JsonlWriter, atomic_write_bytes
from fedge.runfolder import RunFolder, staging
from fedge.runfolder.staging import attempt, open_attempt
from fedge.runtimes import checkpoint

RUN = ["--devices", "4", "--rounds", "2", "--algorithm", "dpmn", "--no-progress", "--set", "train.epochs=1"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"round": 1}\n')
    (folder / "summary.json").write_text('{"run_id": "old"}\n')
    (folder / "dpmn").mkdir()
    (folder / "dpmn" / "checkpoint.pt").write_bytes(b"old")


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.attempt-"))


def test_rerun_replaces_a_finished_folder_only_when_it_completes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _finished(out)
    old = _snapshot(out)
    with attempt(out) as place:
        assert place.staged and place.path != out and place.path.parent == out.parent
        (place.path / "metrics.jsonl").write_text('{"round": 1, "new": true}\n')
        assert _snapshot(out) == old  # the old run is untouched while the new one runs
        (place.path / "summary.json").write_text('{"run_id": "new"}\n')
    assert _snapshot(out) == {"metrics.jsonl": b'{"round": 1, "new": true}\n', "summary.json": b'{"run_id": "new"}\n'}
    assert _siblings(out) == []
    for error in (KeyboardInterrupt(), ConfigError("data missing")):
        with pytest.raises(type(error)), attempt(out) as place:
            (place.path / "metrics.jsonl").write_text("partial\n")
            raise error
        assert json.loads((out / "summary.json").read_text())["run_id"] == "new" and _siblings(out) == []


def test_publish_without_renameat2_uses_two_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    _finished(out)
    with attempt(out) as place:
        (place.path / "summary.json").write_text('{"run_id": "new"}\n')
    assert _snapshot(out) == {"summary.json": b'{"run_id": "new"}\n'} and _siblings(out) == []


def test_fresh_folder_is_written_in_place_and_removed_when_nothing_was_written(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(ConfigError), attempt(out) as place:
        assert not place.staged and place.path == out and out.is_dir()
        raise ConfigError("ratings.csv not found")
    assert not (tmp_path / "a").exists()  # the folders it created, still empty, are gone
    with attempt(out) as place:
        (place.path / "metrics.jsonl").write_text("{}\n")
    assert (out / "metrics.jsonl").exists()


def test_a_folder_with_other_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code = cli.main(["run", *RUN, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "notes.txt" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_stale_attempts_of_killed_runs_are_cleaned(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    out = tmp_path / "out"
    _finished(out)
    (tmp_path / f".out.attempt-{pid}-abc").mkdir()
    (tmp_path / f".out.attempt-{os.getpid()}-live").mkdir()  # a live process's attempt is left alone
    open_attempt(out).abandon()
    assert _siblings(out) == [f".out.attempt-{os.getpid()}-live"]
    # a crash between the two renames of a publish without renameat2: the old run is moved back
    old = _snapshot(out)
    out.rename(tmp_path / f".out.attempt-{pid}-xyz.old")
    open_attempt(out).abandon()
    assert _snapshot(out) == old


def test_fedge_run_rerun_then_resume_keeps_the_newer_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18, defect 4: `--resume S` after S was rerun without checkpointing restored the old checkpoint over the
    newer metrics and summary."""
    out = tmp_path / "S"
    assert cli.main(["run", *RUN, "--checkpoint-every", "1", "--out", str(out)]) == 0
    stale = (out / "dpmn" / checkpoint.FILENAME).read_bytes()
    assert cli.main(["run", *RUN, "--set", "seed=1", "--out", str(out)]) == 0  # the newer run, no checkpoint
    newer = _snapshot(out)
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no checkpoint" in err and len(err.splitlines()) == 1
    assert _snapshot(out) == newer
    # a folder where the older run's checkpoint survived beside the newer results (as the old code left it)
    (out / "dpmn" / checkpoint.FILENAME).write_bytes(stale)
    newer = _snapshot(out)
    assert cli.main(["run", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "comes from a later run" in err and len(err.splitlines()) == 1
    assert _snapshot(out) == newer


def test_resume_continues_in_place_and_is_unfinished_until_it_ends(tmp_path: Path) -> None:
    out = tmp_path / "S"
    assert cli.main(["run", *RUN, "--checkpoint-every", "1", "--out", str(out)]) == 0
    run_id = json.loads((out / "dpmn" / "summary.json").read_text())["run_id"]
    assert checkpoint.load(out / "dpmn" / checkpoint.FILENAME).run_id == run_id
    assert cli.main(["run", *RUN, "--rounds", "3", "--resume", str(out)]) == 0  # extended by one round
    summary = json.loads((out / "dpmn" / "summary.json").read_text())
    assert summary["run_id"] == run_id and summary["rounds"] == 3 and (out / "comparison.json").exists()
    assert len((out / "dpmn" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("command", ["run", "recsys", "cache", "reproduce"])
def test_output_problems_are_found_before_any_data_is_loaded(command: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Each command is pointed at data that does not exist: the error must be about the output."""
    missing = str(tmp_path / "no-data")
    data = {"run": ["--dataset", "fmnist", "--data-dir", missing], "recsys": ["--data-dir", missing],
            "cache": ["--trace", "movielens", "--data-dir", missing],
            "reproduce": ["--dataset", "fmnist", "--data-dir", missing]}[command]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [(a_file, "exists and is not a folder"), (a_file / "sub", "is a file, not a folder")]
    if Path("/sys/kernel").is_dir():  # a place nobody, root included, may create a folder
        cases.append((Path("/sys/kernel/fedge-test-out"), "cannot create"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "out", "cannot create"))
    for out, needle in cases:
        code = cli.main([command, *data, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and needle in err and str(out) in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_files_are_written_with_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        folder = RunFolder(tmp_path / "run")
        folder.log({"round": 1})
        folder.finish({"config": {"seed": 0}})
        with JsonlWriter(tmp_path / "b.jsonl") as log:
            log.write({})
        checkpoint.save(tmp_path / "checkpoint.pt", checkpoint.Checkpoint("dpmn", 1, "h", {}, 1, {}, {}, []))
    finally:
        os.umask(previous)
    for path in [tmp_path / "a.bin", tmp_path / "b.jsonl", tmp_path / "checkpoint.pt",
                 *(tmp_path / "run").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
