"""Downloads that survive interruption: streamed to ``<file>.partial``, resumed with an HTTP
Range request, checked for size and sha256, then renamed into place.

A cut connection leaves the ``.partial`` file for the next attempt to continue; a checksum
mismatch deletes it (continuing a wrong file would only make a longer wrong file).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmpbench.datasets.store import DatasetError, sha256_of

CHUNK_BYTES = 1 << 20
USER_AGENT = "lmpbench-data-fetch"


class DownloadError(DatasetError):
    """A download failed; the message says why and what to do."""


class UnreachableError(DownloadError):
    """The server could not be reached or refused the file (no network, DNS, HTTP error)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach {url} ({reason})")
        self.url, self.reason = url, reason


class ChecksumError(DownloadError):
    """The file's sha256 differs from the expected one."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    bytes: int
    sha256: str
    resumed_from: int  # bytes already there when this download started


def partial_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".partial")


def verify_sha256(path: Path, expected: str | None, what: str) -> str:
    """The sha256 of ``path``; ``ChecksumError`` (naming ``what``: whose checksum it is) when
    ``expected`` is given and differs."""
    actual = sha256_of(path)
    if expected is not None and actual != expected.lower():
        raise ChecksumError(f"{path.name}: sha256 {actual} differs from the {what} {expected.lower()}; refused")
    return actual


def download(url: str, destination: str | Path, *, expected_sha256: str | None = None, checksum_what: str = "expected",
             timeout_s: float = 60.0, progress: Callable[[int, int | None], None] | None = None) -> Fetched:
    """Fetch ``url`` into ``destination`` (resuming ``destination.partial`` if there is one).

    Raises ``UnreachableError`` when the server cannot be reached, ``DownloadError`` when the
    transfer stops short (the partial file is kept: call again to resume) and
    ``ChecksumError`` on a sha256 mismatch (the partial file is deleted)."""
    destination = Path(destination)
    partial = partial_path(destination)
    start = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                   **({"Range": f"bytes={start}-"} if start else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the range starts at or past the end: our partial file is no prefix of it
            partial.unlink()
            return download(url, destination, expected_sha256=expected_sha256, checksum_what=checksum_what,
                            timeout_s=timeout_s, progress=progress)
        raise UnreachableError(url, f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise UnreachableError(url, str(reason).strip() or type(err).__name__) from None

    destination.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    with response:
        if start and response.status == 206:
            offset = _range_start(response.headers.get("Content-Range"))
            if offset != start:
                raise DownloadError(f"{url}: asked to resume at byte {start}, the server sent from byte {offset}")
            mode = "ab"
        else:  # a server that ignores Range sends the whole file again
            start, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        done, last_report = start, 0.0
        try:
            with open(partial, mode) as f:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    done += len(chunk)
                    if progress and time.monotonic() - last_report > 1.0:
                        progress(done, total)
                        last_report = time.monotonic()
        except (OSError, http.client.HTTPException) as err:  # a cut connection (or a full disk): keep what came
            raise DownloadError(f"download of {url} stopped at {done} bytes ({err}); run the same command again "
                                "to resume") from None
    if total is not None and done != total:
        raise DownloadError(f"download of {url} stopped at {done} of {total} bytes; run the same command again "
                            "to resume")
    if progress:
        progress(done, total)
    try:
        sha256 = verify_sha256(partial, expected_sha256, checksum_what)
    except ChecksumError:
        partial.unlink()
        raise
    os.replace(partial, destination)
    return Fetched(destination, done, sha256, resumed_from=start)


def copy_verified(source: str | Path, destination: str | Path, *, expected_sha256: str | None = None,
                  checksum_what: str = "expected") -> Fetched:
    """A local copy of ``source`` at ``destination`` (through ``.partial``), its sha256 checked."""
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise DatasetError(f"{source} does not exist")
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() == destination.resolve():
        return Fetched(destination, destination.stat().st_size, verify_sha256(destination, expected_sha256,
                                                                              checksum_what), 0)
    partial = partial_path(destination)
    try:
        shutil.copyfile(source, partial)
        sha256 = verify_sha256(partial, expected_sha256, checksum_what)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, destination)
    return Fetched(destination, destination.stat().st_size, sha256, 0)


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None
