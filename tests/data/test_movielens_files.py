"""What the one MovieLens reader (`fedge.data.movielens`) accepts and refuses, on small files written here.

Issue 18: duplicate ratings leaked held-out items into training, out-of-scale ratings were accepted, the header was
never read by name (columns by position), a file without its header lost its first row, and an over-long id was a
traceback. Each case below failed (or was silently accepted) before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.data.movielens import load_movielens, parse_ratings, read_genres
from fedge.errors import DataError

HEADER = "userId,movieId,rating,timestamp\n"


def _write(tmp_path: Path, text: str, name: str = "ratings.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _refused(path: Path, dataset: str = "ml-latest-small") -> str:
    """The one-line message parse_ratings refuses `path` with."""
    with pytest.raises(DataError) as info:
        parse_ratings(path, dataset)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_duplicates_keep_the_latest_rating_and_are_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "1,10,2.0,50\n1,20,3.0,60\n1,10,4.5,70\n2,10,1.0,5\n1,10,3.0,40\n2,10,1.0,5\n")
    ratings = parse_ratings(path)
    assert ratings.duplicates_removed == 3 and len(ratings) == 3
    # kept rows stay in file order: (1,20) line 3, (1,10) latest at ts 70 line 4, (2,10) the later of two ties
    assert ratings.item_ids[ratings.item].tolist() == [20, 10, 10]
    assert ratings.rating.tolist() == [3.0, 4.5, 1.0] and ratings.timestamp.tolist() == [60, 70, 5]


def test_every_row_twice_reads_like_every_row_once(tmp_path: Path) -> None:
    rows = "1,10,4.0,5\n7,10,3.5,6\n1,3,1,7\n"
    once = parse_ratings(_write(tmp_path, HEADER + rows, "a.csv"))
    twice = parse_ratings(_write(tmp_path, HEADER + rows + rows, "b.csv"))
    assert twice.duplicates_removed == 3 and once.duplicates_removed == 0
    for field in ("user", "item", "rating", "timestamp"):
        assert getattr(once, field).tolist() == getattr(twice, field).tolist()


def test_header_is_read_by_name_in_any_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "timestamp,rating,movieId,userId,comment\n5,4.0,10,1,good\n6,3.5,10,7,\n")
    ratings = parse_ratings(path)
    assert ratings.user_ids.tolist() == [1, 7] and ratings.item_ids.tolist() == [10]
    assert ratings.rating.tolist() == [4.0, 3.5] and ratings.timestamp.tolist() == [5, 6]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (HEADER + "1,10,4.0,5\n").encode())
    assert len(parse_ratings(bom)) == 1


@pytest.mark.parametrize(("header", "fragment"), [
    ("userId,itemId,rating,timestamp", "header has no column 'movieId'"),
    ("userId,movieId,stars,timestamp", "header has no column 'rating'"),
    ("user,movieId,rating,timestamp", "header has no column 'userId'"),
    ("userId,movieId,rating,rating", "header names column 'rating' twice"),
])
def test_header_names_the_missing_column(tmp_path: Path, header: str, fragment: str) -> None:
    message = _refused(_write(tmp_path, header + "\n1,10,4.0,5\n"))
    assert ":1: " in message and fragment in message


def test_a_file_without_its_header_is_refused_not_shortened(tmp_path: Path) -> None:
    """Before, the first rating row was taken as the header and silently dropped."""
    message = _refused(_write(tmp_path, "1,10,4.0,5\n7,10,3.5,6\n"))
    assert ":1: no header line" in message and HEADER.strip() in message


@pytest.mark.parametrize(("dataset", "name", "row", "fragment"), [
    ("ml-latest-small", "ratings.csv", "1,10,43.6,5", "rating 43.6 is off the ml-latest-small rating scale"),
    ("ml-latest-small", "ratings.csv", "1,10,0,5", "rating 0 is off"),
    ("ml-latest-small", "ratings.csv", "1,10,-1,5", "rating -1 is off"),
    ("ml-latest-small", "ratings.csv", "1,10,3.7,5", "(0.5-5 in steps of 0.5)"),
    ("ml-latest-small", "ratings.csv", "1,10,nan,5", "rating nan is not a finite number"),
    ("ml-latest-small", "ratings.csv", "1,10,inf,5", "rating inf is not a finite number"),
    ("ml-latest-small", "ratings.csv", "1,10,-inf,5", "is not a finite number"),
    ("ml-100k", "u.data", "1\t10\t4.5\t5", "rating 4.5 is off the ml-100k rating scale (1-5 in steps of 1)"),
    ("ml-1m", "ratings.dat", "1::10::0.5::5", "rating 0.5 is off the ml-1m rating scale"),
])
def test_ratings_off_the_scale_are_refused_with_file_and_line(tmp_path: Path, dataset: str, name: str, row: str,
                                                               fragment: str) -> None:
    sep = {"ratings.csv": ",", "u.data": "\t", "ratings.dat": "::"}[name]
    good = sep.join(["2", "10", "3", "4"])
    header = HEADER if name == "ratings.csv" else ""
    message = _refused(_write(tmp_path, f"{header}{good}\n{row}\n", name), dataset)
    line = 3 if header else 2
    assert f":{line}: " in message and fragment in message


@pytest.mark.parametrize(("row", "fragment"), [
    ("99999999999999999999,10,4.0,5", "user id 99999999999999999999 is out of range"),
    ("1,99999999999999999999,4.0,5", "movie id 99999999999999999999 is out of range"),
    ("-3,10,4.0,5", "user id -3 is out of range (must be a non-negative integer"),
    ("1,10,4.0,99999999999999999999", "timestamp 99999999999999999999 is out of range"),
])
def test_ids_that_do_not_fit_are_refused(tmp_path: Path, row: str, fragment: str) -> None:
    """An over-long id was an OverflowError traceback."""
    message = _refused(_write(tmp_path, HEADER + "1,10,4.0,5\n" + row + "\n"))
    assert ":3: " in message and fragment in message


def test_headerless_format_with_a_header_says_so(tmp_path: Path) -> None:
    message = _refused(_write(tmp_path, "user\titem\trating\ttimestamp\n1\t2\t3\t4\n", "u.data"), "ml-100k")
    assert ":1: " in message and "u.data has no header line" in message


def test_load_finds_the_format_and_applies_its_rules(tmp_path: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t10\t4\t5\n1\t10\t5\t9\n2\t10\t1\t5\n")
    ratings = load_movielens("ml-100k", tmp_path)
    assert len(ratings) == 2 and ratings.duplicates_removed == 1 and ratings.rating.tolist() == [5.0, 1.0]


def test_movies_file_header_by_name_and_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, 'genres,movieId,title\nComedy|Drama,10,A\n(no genres listed),30,"B, the"\n', "movies.csv")
    assert read_genres(path) == {10: ["Comedy", "Drama"], 30: []}
    for text, fragment in [
        ("movieId,title\n10,A\n", "header has no column 'genres'"),
        ("10,A,Comedy\n", "no header line"),
        ("movieId,title,genres\n10,A,Comedy\n10,B,Drama\n", ":3: movieId 10 repeats line 2"),
        ("movieId,title,genres\n99999999999999999999,A,Comedy\n", ":2: movie id 99999999999999999999 is out of range"),
        ("movieId,title,genres\nten,A,Comedy\n", ":2: movieId must be an integer"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError) as info:
            read_genres(path)
        assert fragment in str(info.value) and str(path) in str(info.value)
