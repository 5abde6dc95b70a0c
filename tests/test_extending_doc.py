"""docs/extending.md's code runs as written, against the public API, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_new_algorithm_example_is_short() -> None:
    algorithm = blocks()[0]
    assert "register_algorithm" in algorithm and len(algorithm.strip().splitlines()) < 40


def test_every_example_runs(tmp_path: Path) -> None:
    for number, code in enumerate(blocks()):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                              timeout=600)
        assert done.returncode == 0, f"example {number}:\n{done.stderr[-2000:]}"
        assert "accuracy" in done.stdout or re.search(r"\d\.\d", done.stdout), done.stdout


def test_the_package_exports_exactly_the_api() -> None:
    import fedge
    from fedge import api

    assert set(api.__all__) == fedge._API
    assert all(getattr(fedge, name) is getattr(api, name) for name in api.__all__)
