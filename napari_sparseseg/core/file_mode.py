"""The permissions a new file gets: what the process's umask allows (a file written through a temporary one is
created 0600 by :func:`tempfile.mkstemp`, which would keep a mask or a model from colleagues on a shared drive)."""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read from ``/proc`` where there is one: setting it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_new_file(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` (a temporary file or folder about to replace another) the mode a new one would have."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())
