"""One writer per folder: an OS lock held by the process that writes into a run folder.

``lmpbench run`` holds it for the whole run, ``analyze`` while it reads a folder and writes
its results there. A second process that wants the folder gets ``FolderInUseError`` naming
the host and process that hold it, and changes nothing. The lock is taken on
``FOLDER/.lmpbench.lock``: the kernel (or the NFS lock manager) drops it
when its process ends, however it ends (SIGKILL, a dead node once its lease expires), so an
interrupted run never blocks its own resume. The file itself stays; its text (host, pid,
command, start time) is only read to name a holder that still holds the lock.

The lock is ``flock`` (one per open file, so two openers in one process exclude each other
too); Linux carries it over NFS as a POSIX byte-range lock, which the NFS lock manager
enforces across nodes. Assumed of the file system: locks that work across the nodes that
share it (local disks; NFS v3 with lockd or NFS v4; Lustre mounted with ``-o flock``; GPFS).
Where the file system has no locks at all (``ENOLCK``/``ENOSYS``), the folder is used
unprotected and the caller is told so.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lmpbench.lock"
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP}


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock; the message names it."""


class FolderLock:
    """``with FolderLock(folder, "lmpbench run"):`` (or ``acquire()`` / ``release()``)."""

    def __init__(self, folder: str | Path, purpose: str):
        self.folder, self.purpose = Path(folder), purpose
        self.path = self.folder / LOCK_NAME
        self._file = None
        self.unprotected: str | None = None  # why the folder could not be locked, when it could not

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _NO_LOCKS:
                self.unprotected = f"the file system of {self.folder} offers no locks ({os.strerror(err.errno)})"
                handle.close()
                return self
            handle.close()
            if err.errno in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                raise FolderInUseError(f"{self.folder} is in use by {self._holder()}; wait for it to end, or stop "
                                       "it, before using this folder") from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": self.purpose,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}) + "\n")
        handle.flush()
        self._file = handle
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return (f"{info.get('command', 'another lmpbench process')} on host {info.get('host', '?')}, "
                    f"process {info.get('pid', '?')} (since {info.get('since', '?')})")
        except (OSError, ValueError, AttributeError):
            return "another process"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
