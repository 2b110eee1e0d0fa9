"""One writer per session store: a lock file naming the process that has the store open.

Two processes writing one store would overwrite each other's chunks without a
word. :func:`acquire` creates ``lock.json`` (``{"pid", "host", "since"}``)
with ``O_EXCL``; a second process on the same machine gets
:class:`StoreInUseError` naming the holder. A lock left by a process that no
longer runs (killed, crashed) is taken over. A lock from another machine
cannot be checked and is refused with what to do. The process that holds a
lock may open the store again (the plugin reopens a store it is writing).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "lock.json"


class StoreInUseError(ValueError):
    """The store is open for writing in another process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def holder(path: str | Path) -> dict | None:
    """The lock's content (``None`` when unlocked or unreadable)."""
    try:
        held = json.loads((Path(path) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _when(since: object) -> str:
    """A lock's ``since`` (seconds since the epoch, read from the file: any value) as a local time, or "unknown"."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(since)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def check_free(path: str | Path) -> None:
    """Raise :class:`StoreInUseError` if another live process on this machine, or any process on another machine,
    holds the store's lock (before the store is replaced or opened for writing)."""
    held, me = holder(path), _me()
    if held is None or held.get("pid") == me["pid"] and held.get("host") == me["host"]:
        return
    since, lock = _when(held.get("since")), Path(path) / LOCK_NAME
    if held.get("host") != me["host"]:
        raise StoreInUseError(f"{path} is open in process {held.get('pid')} on {held.get('host')} (since {since}); "
                              f"close it there, or delete {lock} if that process is gone")
    if isinstance(held.get("pid"), int) and _alive(held["pid"]):
        raise StoreInUseError(f"{path} is open in process {held['pid']} (since {since}); close it there first, or "
                              "open a copy of the folder")


def acquire(path: str | Path) -> None:
    """Take the store's lock for this process.

    Raises
    ------
    StoreInUseError
        If a live process on this machine, or any process on another machine, holds it.
    """
    lock = Path(path) / LOCK_NAME
    me = _me()
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        check_free(path)
        tmp = lock.with_name(f"{LOCK_NAME}.{me['pid']}.tmp")  # stale, unreadable or ours: take it over
        tmp.write_text(json.dumps(me))
        os.replace(tmp, lock)
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(me))


def release(path: str | Path) -> None:
    """Drop the lock if this process holds it."""
    held = holder(path)
    if held is not None and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        try:
            (Path(path) / LOCK_NAME).unlink()
        except OSError:
            pass
