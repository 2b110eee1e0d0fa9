"""Work the widget starts in background threads while the user paints, so that Start does not wait for it.

* :func:`warm_up_device`: the process's one-time start-up costs (CUDA
  context, the first optimiser's imports; ``core.device.warm_up``).
* :class:`FeatureCache`: the first responder's filter bank of the chosen image
  (``core.first_responder.FeatureStack``), computed from the moment the image
  is chosen and reused by every session on that image.

Plain daemon threads: they touch no Qt object and nobody waits for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.config import ResponderConfig

if TYPE_CHECKING:
    from napari.layers import Image

    from ..core.feature_stack import FeatureStack


def warm_up_device(device: str) -> None:
    """Pay the one-time start-up costs of ``device`` ("auto", "cpu", "cuda") in a daemon thread."""
    from ..core.device import warm_up

    threading.Thread(target=warm_up, args=(device,), kwargs={"quiet": True}, daemon=True,
                     name="sparseseg-warm-up").start()


class FeatureCache:
    """The filter bank of the latest image asked for, computing in a background thread."""

    def __init__(self, max_bytes: int = ResponderConfig().max_feature_bytes) -> None:
        self.max_bytes = max_bytes
        self._stack: FeatureStack | None = None
        self._claimed = False  # whether a session was given the stack held
        self._session_stack: FeatureStack | None = None  # the stack a session was given (until unclaim)

    def for_layer(self, layer: Image | None, num_classes: int = 1, *, claim: bool = False,
                  channels: Sequence[Image] = ()) -> FeatureStack | None:
        """The filter bank of ``layer`` (with ``channels``, further image layers read as its channels,
        :class:`~napari_sparseseg.core.channels.ChannelStack`) for a session of ``num_classes`` foreground classes
        (started now unless it is the one held); None where the first responder will not run (no 3D image, or a
        feature stack over ``max_bytes`` even on a binned grid). A lazy image (zarr, dask; the window checked that
        it fits in memory), or several channels, is read in that thread, once, and the session is built on the
        array read
        (:meth:`~napari_sparseseg.core.feature_stack.FeatureStack.array`). The classes count because the first
        responder's context maps share the memory: a held stack on another grid is dropped for one on the grid the
        session will use.

        A dropped stack stops computing (another image was chosen), unless it was ``claim``-ed: the stack given to
        a session goes on computing for it (until :meth:`unclaim`)."""
        if layer is None or getattr(layer.data, "ndim", None) != 3:
            return None
        from ..core.channels import ChannelStack
        from ..core.feature_stack import FeatureStack, choose_grid, preview_grid
        from ..core.footprint import bank_budget

        spacing = tuple(float(s) for s in layer.scale[-3:])
        arrays = (layer.data, *(c.data for c in channels))
        # In half precision or binned where the full bank would not fit (core/feature_stack.py).
        grid = choose_grid(layer.data.shape, spacing, bank_budget(self.max_bytes), len(arrays),
                           max(1, int(num_classes)))
        stack, session = self._stack, self._session_stack
        if stack is None or not _stack_of(stack, arrays, spacing) or stack.grid != grid:
            if stack is not None and not self._claimed:
                stack.cancel()  # its thread ends before its next filter scale, and frees what it computed
            if session is not None and _stack_of(session, arrays, spacing) and session.grid == grid:
                self._stack, self._claimed = session, True  # back to the session's own: no second bank
                return session
            self._claimed = False
            image, axis = (arrays[0], None) if len(arrays) == 1 else (ChannelStack(arrays), 0)
            self._stack = stack = None if grid is None else FeatureStack(
                image, spacing, axis, grid=grid, preview=preview_grid(layer.data.shape, spacing, grid))
            if stack is not None:
                stack.start()  # its preview first where it has one
        if claim and stack is not None:
            self._claimed, self._session_stack = True, stack
        return stack

    def held_for(self, layer: Image | None, channels: Sequence[Image] = ()) -> FeatureStack | None:
        """The stack held, if it is of ``layer``'s image with ``channels`` (None: none, or another image's)."""
        stack = self._stack
        if stack is None or layer is None:
            return None
        return stack if _stack_of(stack, (layer.data, *(c.data for c in channels)), stack.spacing) else None

    def close(self) -> None:
        """The widget is closing: every bank held stops computing and is dropped (a bank of a large volume would
        otherwise go on for a minute or more after the window is gone)."""
        for stack in (self._stack, self._session_stack):
            if stack is not None:
                stack.cancel()  # twice for one stack is harmless
        self._stack = self._session_stack = None
        self._claimed = False

    def unclaim(self) -> None:
        """The session given the stack held is gone: a stack dropped from now on stops computing."""
        self._claimed, self._session_stack = False, None


def _stack_of(stack: FeatureStack, arrays: tuple, spacing: tuple[float, ...]) -> bool:
    """Whether ``stack`` is the bank of ``arrays`` (one image, or the channels stacked) at ``spacing``."""
    from ..core.channels import ChannelStack

    if len(arrays) == 1:
        return stack.matches(arrays[0], spacing)
    image = stack.source.image
    return isinstance(image, ChannelStack) and image.holds(arrays) and stack.matches(image, spacing, 0)


def bank_words(stack: FeatureStack | None, now: float | None = None) -> str:
    """A line for the user on the first responder's filter bank of the chosen image: computing (for how long, and
    whether its preview answers already), ready, or failed; empty without a stack. ``now``: ``time.perf_counter()``."""
    if stack is None:
        return ""
    if stack.ready:
        return f"first responder ready (filter bank computed in {stack.seconds:.0f} s)"
    preview = stack.preview
    if stack.error is not None:
        then = "its coarser preview answers" if preview is not None and preview.ready else "Start computes it again"
        return f"the first responder's filter bank failed ({stack.error}); {then}"
    starts = [t for t in (stack.started, preview.started if preview is not None else None) if t is not None]
    if not starts:
        return "first responder: its filter bank will be computed"
    now = time.perf_counter() if now is None else now
    seconds = now - min(starts)
    preview_ready = preview is not None and preview.ready
    share = stack.share_done if stack.started is not None else 0.0
    done = ""
    if 0 < share < 1:  # the groups of columns take about as long as each other: the time left, roughly
        left = (now - stack.started) * (1 - share) / share
        done = f": {100 * share:.0f} % in {seconds:.0f} s, about {left:.0f} s left"
    return (f"first responder: computing its filter bank{done or f', {seconds:.0f} s so far'}"
            + ("; a coarser preview is ready to answer at Start" if preview_ready else "") + " (keep painting)")
