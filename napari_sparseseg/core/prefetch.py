"""One item built ahead in a background thread: the next training batch while the current step computes.

A training step has a host part (sampling a patch, cutting it out of the
volume, augmenting it) and a compute part (forward, loss, backward, optimiser).
:class:`OneAhead` runs the host part of step ``n + 1`` in a worker thread while
step ``n`` computes, the way a PyTorch ``DataLoader`` prefetches, but with one
worker and an explicit check that the item still answers the question asked:
the trainer throws a prefetched batch away when the labels, the augmentation
switch, the batch or the patch size changed since it was started, so an edit
always reaches the very next step.

Items are built strictly one after the other (the caller waits for the pending
build before it builds one itself), so a build may use random generators that
the caller never touches while a build is pending: the sequence of items is the
one inline building gives, and seeded training stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class OneAhead(Generic[T]):
    """Keeps one ``build(key)`` running ahead in a worker thread.

    Parameters
    ----------
    build : callable
        ``build(key) -> item``. Called in the worker thread, or in the caller's
        thread when no matching item is pending. Its exceptions reach the
        caller of :meth:`take`.
    name : str
        Name prefix of the worker thread (shown by debuggers and profilers).
    """

    def __init__(self, build: Callable[[Hashable], T], name: str = "sparseseg-prefetch") -> None:
        self._build = build
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Hashable, Future[T]] | None = None
        #: Items taken from the worker, and items built in the caller's thread (a miss: no item was pending,
        #: its key differed, or it was stale).
        self.hits = 0
        self.misses = 0

    def take(self, key: Hashable, fresh: Callable[[T], bool] = lambda item: True) -> T:
        """The item for ``key``, then start building the next one for the same key.

        The pending item is used if it was started for an equal ``key`` and
        ``fresh(item)`` holds (e.g. it was cut from the labels as they are now);
        otherwise it is dropped and an item is built here, in the caller's thread.
        """
        item: T | None = None
        if self._pending is not None:
            pending_key, future = self._pending
            self._pending = None
            if pending_key == key:
                candidate = future.result()  # waits; the build's error is the caller's
                if fresh(candidate):
                    item = candidate
                    self.hits += 1
            else:
                future.exception()  # waits; a build for another key is dropped, error or not
        if item is None:
            item = self._build(key)
            self.misses += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._pending = (key, self._executor.submit(self._build, key))
        return item

    def drop(self) -> None:
        """Wait for and discard the pending item (e.g. before the builder's inputs are replaced)."""
        if self._pending is not None:
            self._pending[1].exception()  # waits; an error of a discarded build does not matter
            self._pending = None

    def close(self) -> None:
        """Drop the pending item and end the worker thread (idempotent; :meth:`take` starts a new one)."""
        self.drop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
