"""Files a user reads are replaced whole: written under a temporary name beside the target,
flushed to disk, then renamed over it (``os.replace`` is atomic on POSIX file systems, NFS
included). A reader, a crash or a full disk sees the old file or the new one, never half."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replace ``path`` by ``data`` all at once; on failure the old file is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
