"""The autosave thread of a session store: a flush every ``interval`` seconds, and a last one before the process exits.

:class:`Autosave` is a base of :class:`~.store_writer.StoreWriter`, whose
``flush`` writes what changed since the last one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Seconds between two flushes of the autosave thread (a flush with nothing to write costs a few microseconds).
AUTOSAVE_SECONDS = 0.1


class Autosave:
    """Runs ``self.flush()`` in a daemon thread; the class that inherits it defines ``flush`` and ``path``."""

    path: Path

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._interval = AUTOSAVE_SECONDS
        #: Last exception of the autosave thread (it keeps running; the next flush retries).
        self.last_error: BaseException | None = None

    def flush(self) -> object:  # pragma: no cover (defined by the store)
        raise NotImplementedError

    def start_autosave(self, interval: float = AUTOSAVE_SECONDS) -> None:
        """Flush every ``interval`` seconds in a daemon thread (idempotent)."""
        if interval <= 0:
            raise ValueError(f"autosave interval must be > 0 seconds, got {interval}")
        self._interval = float(interval)
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._autosave_loop, name="sparseseg-autosave", daemon=True)
        self._thread.start()
        flush_before_exit(self)

    def stop_autosave(self, flush: bool = True) -> None:
        """Stop the autosave thread (after a last flush when ``flush``)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if flush:
            self.flush()

    @property
    def autosaving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _autosave_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 (a full disk must not kill the thread; the next flush retries)
                if self.last_error is None:
                    log.warning("session store %s: autosave failed: %s", self.path, exc)
                self.last_error = exc


def flush_before_exit(store: Autosave) -> None:
    """Have a script that exits without closing ``store`` still flush it, while zarr's I/O threads still run.

    Interpreter shutdown stops the thread pools (zarr writes through them) before ``atexit`` functions run, so a
    flush from ``atexit`` failed ("cannot schedule new futures after interpreter shutdown"). Hooks registered with
    ``threading._register_atexit`` run first, newest first, so this one runs before the pools stop. Where that
    private hook is missing, ``atexit`` is the fallback.
    """
    import weakref

    ref = weakref.ref(store)

    def flush() -> None:
        live = ref()
        if live is not None and live.autosaving:
            try:
                live.stop_autosave(flush=True)
            except Exception as exc:  # noqa: BLE001 (at exit: report, never raise)
                log.warning("session store %s: last flush at exit failed: %s", live.path, exc)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(flush)
    except RuntimeError:  # no hook, or the interpreter is already shutting down
        import atexit

        atexit.register(flush)
