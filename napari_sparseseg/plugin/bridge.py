"""Worker lifecycle: the session's compute generator in a napari ``thread_worker``.

The worker thread only computes: it builds the session (torch import, net,
intensity normalisation can take seconds on a large volume), then iterates
:meth:`SegmentationSession.interactive` (the session's interactive loop with a cap on the
time spent predicting). Each event crosses to
the GUI thread through ``worker.yielded``; layer writes happen there.

A :class:`~.core.events.Prediction` is merged with the labels in the worker
(``session.merge``), so the GUI thread only copies the result into the
layer and re-merges the voxels edited since (:class:`Refresh`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.box import Box
from ..core.encoding import merge_labels
from ..core.events import Notice, Prediction, TrainStep, Waiting

if TYPE_CHECKING:
    from ..core.session import SegmentationSession


@dataclass(frozen=True)
class SessionReady:
    """The session the worker trains exists (first event of every run)."""

    session: SegmentationSession


@dataclass(frozen=True)
class Refresh:
    """A prediction ready for the prediction layer.

    Attributes
    ----------
    prediction : Prediction
        The raw network output of ``prediction.box``.
    merged : np.ndarray
        uint8 mask-encoded class map of the box, with labeled voxels replaced
        by their labels as of annotation revision ``revision``.
    revision : int
        Revision of the labels merged in; voxels edited after it must be
        merged again before display.
    """

    prediction: Prediction
    merged: np.ndarray
    revision: int


WorkerEvent = SessionReady | TrainStep | Waiting | Notice | Refresh


class TrainingError(Exception):
    """An exception raised in the worker, re-raised under a type superqt reports.

    superqt's generator worker swallows ``RuntimeError`` (it takes it for a
    deleted Qt object) without emitting ``errored`` or ``finished``; torch
    raises ``RuntimeError`` for most failures, so every error is wrapped.
    """


@dataclass
class RunFlags:
    """Thread-safe flags shared by the GUI thread and one run's generator."""

    stop: threading.Event
    started: threading.Event
    done: threading.Event

    @classmethod
    def new(cls) -> RunFlags:
        return cls(threading.Event(), threading.Event(), threading.Event())


def compute(build: Callable[[], SegmentationSession], view_box: Callable[[], Box | None], flags: RunFlags,
            *, refresh_seconds: float = 3.0, first_refresh_steps: int = 10,
            view_volume: Callable[[], tuple[int, Box | None]] = lambda: (0, None),
            held: SegmentationSession | None = None) -> Iterator[WorkerEvent]:
    """The worker's generator: build the session, then train and stream predictions.

    A run stopped while its session is being built delivers nothing: the new session's store (made by the
    builder, autosaving) is closed, so no thread and no lock outlive it; ``held``, a session the caller holds
    already (a Start after Stop), keeps its store.

    Parameters
    ----------
    build : callable
        Returns the session (may be an existing one).
    view_box : callable
        The box in view, read at each refresh (must be thread-safe: a cached value).
    flags : RunFlags
        ``stop`` ends the run at the next yield; ``started`` and ``done`` are
        set when the generator starts and ends, however it ends.
    refresh_seconds, first_refresh_steps, view_volume
        See :meth:`~.core.session.SegmentationSession.interactive` (``view_volume`` thread-safe too).
    held : SegmentationSession, optional
        The session ``build`` hands back when it reuses one.

    Raises
    ------
    TrainingError
        Wrapping any exception of the session (the original is its cause).
    """
    flags.started.set()
    events = None
    try:
        if flags.stop.is_set():
            return
        session = build()
        if flags.stop.is_set():  # stopped while it was built (a layer removed, the widget closed)
            if session is not held and session.store is not None:
                session.store.close()
            return
        yield SessionReady(session)
        # Workaround for the core's interactive(), which refreshes every
        # ``refresh_seconds`` however long a prediction takes (see SegmentationSession.interactive).
        events = session.interactive(view_box, refresh_seconds=refresh_seconds,
                                     first_refresh_steps=first_refresh_steps, should_stop=flags.stop.is_set,
                                     view_volume=view_volume)
        for event in events:
            if flags.stop.is_set():
                return
            if isinstance(event, Prediction):
                revision = session.training_volumes[event.volume].revision if event.volume else session.revision
                yield Refresh(event, session.merge(event), revision)
            else:
                yield event
            if flags.stop.is_set():
                return
    except Exception as exc:
        raise TrainingError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if events is not None:
            events.close()
        flags.done.set()


def merge_late_edits(session: SegmentationSession, refresh: Refresh) -> np.ndarray:
    """``refresh.merged`` with the voxels of its volume labeled after ``refresh.revision`` merged again."""
    merged = refresh.merged
    box = refresh.prediction.box
    volume = session.training_volumes[refresh.prediction.volume]
    late = volume.changes_since(refresh.revision)
    if late.empty:
        return merged
    lo = np.maximum(late.start, box.start)
    hi = np.minimum(late.stop, box.stop)
    if np.any(hi <= lo):
        return merged
    merged = merged.copy()
    world = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, box.start))
    # from the prediction itself, not the map merged before: a label erased since shows the prediction again
    merged[local] = merge_labels(refresh.prediction.labels[local], volume.labels[world])
    return merged


class TrainingRun:
    """Start, pause and stop the compute generator in a napari ``thread_worker``.

    Stopping sets a flag the generator checks after every event, so the
    generator returns normally (its ``finally`` runs, the thread ends) instead
    of being abandoned mid-iteration as ``worker.quit()`` would leave it.

    Parameters
    ----------
    on_event : callable
        Called on the GUI thread with each :data:`WorkerEvent`.
    on_error : callable
        Called on the GUI thread with an exception raised in the worker.
    on_finished : callable
        Called on the GUI thread when the worker has ended.
    on_state : callable, optional
        Called on the GUI thread when the worker has paused or resumed.
    """

    def __init__(self, on_event: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 on_finished: Callable[[], None], on_state: Callable[[], None] | None = None) -> None:
        self._on_event = on_event
        self._on_state = on_state
        self._on_error = on_error
        self._on_finished = on_finished
        self.worker: Any = None
        self._flags: RunFlags | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the generator has ended (or a stop was asked before it began)."""
        f = self._flags
        if f is None or f.done.is_set():
            return False
        return not (f.stop.is_set() and not f.started.is_set())

    @property
    def paused(self) -> bool:
        return self.worker is not None and self.running and bool(self.worker.is_paused)

    @property
    def stopping(self) -> bool:
        return self.running and self._flags is not None and self._flags.stop.is_set()

    def start(self, build: Callable[[], SegmentationSession], view_box: Callable[[], Box | None], *,
              refresh_seconds: float = 3.0, first_refresh_steps: int = 10,
              view_volume: Callable[[], tuple[int, Box | None]] = lambda: (0, None),
              held: SegmentationSession | None = None) -> None:
        """Start a worker thread running :func:`compute`.

        Raises
        ------
        RuntimeError
            If a run is still going or the run was shut down.
        """
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError("a training run is already going; stop it first")
        if self._closed:
            raise RuntimeError("this training run was shut down")
        self._flags = flags = RunFlags.new()
        worker = create_worker(compute, build, view_box, flags, refresh_seconds=refresh_seconds,
                               first_refresh_steps=first_refresh_steps, view_volume=view_volume, held=held,
                               _start_thread=False,
                               _ignore_errors=True)
        # Each handler knows its run: events still queued from an earlier run
        # (delivered after a quick Stop + Start) are dropped.
        worker.yielded.connect(lambda event, f=flags: self._yielded(event, f))
        worker.errored.connect(lambda exc, f=flags: self._errored(exc, f))
        worker.finished.connect(lambda f=flags: self._finished(f))
        worker.paused.connect(self._state)
        worker.resumed.connect(self._state)
        self.worker = worker
        worker.start()

    def pause(self) -> None:
        """Pause between two steps (the thread idles)."""
        if self.worker is not None and self.running:
            self.worker.pause()

    def resume(self) -> None:
        if self.worker is not None and self.running:
            self.worker.resume()

    def toggle_pause(self) -> None:
        """Resume a paused run, pause a running one."""
        if self.paused:
            self.resume()
        else:
            self.pause()

    def stop(self) -> None:
        """Ask the run to end after the current step or prediction; returns at once."""
        if self._flags is not None:
            self._flags.stop.set()
        if self.worker is not None and self.worker.is_paused:
            self.worker.resume()

    def stop_and_wait(self, timeout: float) -> bool:
        """Stop a running run and wait for its end (at most ``timeout`` s); True if one was running and ended."""
        if not self.running:
            return False
        self.stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended; True if it did within ``timeout`` seconds.

        A run whose thread had not begun when it was stopped counts as ended:
        when the thread pool starts it, it returns at once.
        """
        f = self._flags
        if f is None:
            return True
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not f.done.is_set():
            if f.stop.is_set() and not f.started.is_set():
                return True
            if deadline is not None and time.perf_counter() >= deadline:
                return False
            f.done.wait(0.01)
        # The thread-pool thread returns right after the generator ends.
        end = time.perf_counter() + 2.0
        while getattr(self.worker, "_running", False) and time.perf_counter() < end:
            time.sleep(0.002)
        return True

    def shutdown(self, timeout: float = 60.0) -> bool:
        """Stop, wait for the thread and drop every callback (widget or viewer closing).

        Returns
        -------
        bool
            True if the worker ended within ``timeout`` seconds.
        """
        self._closed = True
        self.stop()
        return self.wait(timeout)

    # -- signal handlers (GUI thread) --------------------------------------------------
    def _current(self, flags: RunFlags) -> bool:
        return not self._closed and flags is self._flags

    def _yielded(self, event: Any, flags: RunFlags) -> None:
        if self._current(flags):
            self._on_event(event)

    def _errored(self, exc: BaseException, flags: RunFlags) -> None:
        if self._current(flags):
            self._on_error(exc)

    def _state(self) -> None:
        if not self._closed and self._on_state is not None:
            self._on_state()

    def _finished(self, flags: RunFlags) -> None:
        if self._current(flags):
            self._on_finished()
