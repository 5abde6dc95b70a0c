from __future__ import annotations

from pathlib import Path

import pytest

from fedge.data.movielens import load_movielens, parse_ratings
from fedge.errors import DataError


def test_three_formats(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    csv = "userId,movieId,rating,timestamp\n1,10,4.0,5\n7,10,3.5,6\n1,3,1,7\n"
    (tmp_path / "small" / "ratings.csv").write_text(csv)
    (tmp_path / "100k").mkdir()
    (tmp_path / "100k" / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (tmp_path / "1m").mkdir()
    (tmp_path / "1m" / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::1\n")
    small = load_movielens("ml-latest-small", tmp_path / "small")
    assert (small.num_users, small.num_items, len(small)) == (2, 2, 3)
    assert small.user.tolist() == [0, 1, 0] and small.item.tolist() == [1, 1, 0]
    assert small.rating.tolist() == [4.0, 3.5, 1.0] and list(small.item_ids) == [3, 10]
    assert len(load_movielens("ml-100k", tmp_path / "100k")) == 2
    one_m = load_movielens("ml-1m", tmp_path / "1m")
    assert (one_m.num_users, one_m.num_items) == (2, 2) and one_m.timestamp.tolist()[0] == 978300760


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("userId,movieId,rating,timestamp\n1,2,3.0,4\n1,2,3.0\n", 3, "expected 4 columns"),
    ("userId,movieId,rating,timestamp\n1,2,3.0,4\nx,2,3.0,4\n", 3, "ids must be integers"),
    ("userId,movieId,rating,timestamp\n1,2,good,4\n", 2, "must be numbers"),
    ("", 1, "empty file"),
    ("userId,movieId,rating,timestamp\n", 2, "empty file"),
])
def test_malformed_files_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        parse_ratings(path, "ml-latest-small")
    message = str(info.value)
    assert f"{path}:{line}:" in message and fragment in message and "\n" not in message


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"ratings.csv not found in {tmp_path / 'nope'}"):
        load_movielens("ml-latest-small", tmp_path / "nope")
    with pytest.raises(DataError, match="no --data-dir"):
        load_movielens("ml-latest-small", None)


def test_real_ml_latest_small(movielens_dir: Path) -> None:
    ratings = load_movielens("ml-latest-small", movielens_dir)
    assert (ratings.num_users, ratings.num_items, len(ratings)) == (610, 9724, 100836)
