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
from typing import TYPE_CHECKING

import numpy as np

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

    def for_layer(self, layer: Image | None) -> FeatureStack | None:
        """The filter bank of ``layer`` (started now unless it is the one held); None where the first responder
        will not run (no in-memory 3D image, or a feature stack over ``max_bytes`` even on a binned grid)."""
        if layer is None or not isinstance(layer.data, np.ndarray) or layer.data.ndim != 3:
            return None
        spacing = tuple(float(s) for s in layer.scale[-3:])
        stack = self._stack
        if stack is not None and stack.matches(layer.data, spacing):
            return stack
        from ..core.feature_stack import FeatureStack, grid_factors

        factors = grid_factors(layer.data.shape, spacing, self.max_bytes)  # binned where the full bank would not fit
        if factors is None:
            return None
        self._stack = stack = FeatureStack(layer.data, spacing, factors=factors)
        threading.Thread(target=stack.get, daemon=True, name="sparseseg-features").start()
        return stack
