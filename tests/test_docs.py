"""The project's files point nowhere outside the repository."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# written in pieces, so that this file does not match itself
OUTSIDE = ("../" + "shared", "/" + "work/")


def _project_files() -> list[str]:
    """Tracked files, and new ones git does not ignore (not committed yet)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.decode().split("\0") if name]


def test_no_path_outside_the_repository():
    offenders = []
    for name in _project_files():
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if any(pattern in line for pattern in OUTSIDE):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_benchmark_page_is_linked():
    assert (ROOT / "docs" / "benchmark.md").is_file()
    assert "docs/benchmark.md" in (ROOT / "README.md").read_text()
