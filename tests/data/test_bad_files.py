"""Bad data files through the command line (issue 18): one stderr line naming the file, exit 2, never a traceback.

`fedge recsys` and `fedge cache` read ratings.csv with the same reader, so the same file gets the same message from
both. Every file is written here in the real format, small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedge import cli
from fedge.data.idx import write_idx

HEADER = "userId,movieId,rating,timestamp\n"
GOOD_ROWS = "".join(f"{u},{m},{1 + (u + m) % 5}.0,{100 * u + m}\n" for u in range(1, 5) for m in range(10, 16))

BAD_RATINGS = {
    "over-long id": (HEADER + GOOD_ROWS + "99999999999999999999,10,4.0,5\n", ":26: user id 99999999999999999999 is "
                     "out of range"),
    "off the scale": (HEADER + GOOD_ROWS + "1,10,43.6,5\n", ":26: rating 43.6 is off the ml-latest-small rating scale"),
    "nan rating": (HEADER + GOOD_ROWS + "1,10,nan,5\n", ":26: rating nan is not a finite number"),
    "no header": (GOOD_ROWS, ":1: no header line"),
    "renamed column": (HEADER.replace("rating", "stars") + GOOD_ROWS, ":1: header has no column 'rating'"),
}


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line without a traceback; return that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _movielens(folder: Path, ratings: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings)
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{m},M{m},Drama\n" for m in range(10, 16)))
    return folder


@pytest.mark.parametrize("case", list(BAD_RATINGS))
def test_recsys_and_cache_refuse_the_same_ratings_file_alike(case: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    text, fragment = BAD_RATINGS[case]
    folder = _movielens(tmp_path / "ml", text)
    messages = []
    for argv in (["recsys", "--data-dir", str(folder), "--rounds", "1", "--no-progress", "--out", str(tmp_path / "r")],
                 ["cache", "--trace", "movielens", "--data-dir", str(folder), "--policy", "lru", "--episodes", "1",
                  "--capacity", "2", "--no-progress", "--out", str(tmp_path / "c")]):
        err = _one_line_error(argv, capsys)
        assert f"{folder / 'ratings.csv'}{fragment}" in err
        messages.append(err.split(": error: ", 1)[1])
    assert messages[0] == messages[1]  # one reader, one message


@pytest.mark.parametrize(("content", "fragment"), [
    (b"hello, not a tensor", "cannot read"),
    (None, "6 non-finite values"),
])
def test_cache_refuses_unreadable_or_non_finite_item_embeddings(content: bytes | None, fragment: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    folder = _movielens(tmp_path / "ml", HEADER + GOOD_ROWS)
    path = tmp_path / "emb.pt"
    if content is None:
        torch.save({"item_embeddings": torch.full((6, 1), float("nan")), "item_ids": torch.arange(10, 16)}, path)
    else:
        path.write_bytes(content)
    err = _one_line_error(["cache", "--trace", "movielens", "--data-dir", str(folder), "--item-embeddings", str(path),
                           "--policy", "lru", "--episodes", "1", "--capacity", "2", "--no-progress",
                           "--out", str(tmp_path / "c")], capsys)
    assert f"item embeddings: {path}" in err or f"cannot read {path}" in err
    assert fragment in err


def test_run_refuses_fashion_mnist_splits_of_different_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n, size in (("train", 20, 28), ("t10k", 10, 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, size, size), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    err = _one_line_error(["run", "--dataset", "fmnist", "--data-dir", str(folder), "--set",
                           "data.verify_checksums=false", "--devices", "2", "--rounds", "1", "--no-progress",
                           "--out", str(tmp_path / "out")], capsys)
    assert "holds 28x28 images but" in err and "t10k-images-idx3-ubyte.gz holds 20x20" in err
