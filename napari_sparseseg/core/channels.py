"""Several 3D images of one volume read as the channels of one image: the sequences of an MRI, the stains of a stack.

napari opens a multi-channel file as one layer per channel; the window trains on
the chosen image and the layers ticked as its further channels, stacked here on
first read (in the bank's background thread, as a lazy image is read), so that
the first responder's filter bank and the net see every channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ChannelStack"]


class ChannelStack:
    """Same-shape ``(z, y, x)`` arrays read as one ``(c, z, y, x)`` image (channel axis 0), stacked on first read.

    Lazy in the sense of :func:`~.lazy.is_lazy` (shape, dtype, ``__getitem__``): an
    :class:`~.feature_stack.ImageSource` reads it once with ``np.asarray``.

    Parameters
    ----------
    arrays : sequence of array-like
        Two or more ``(z, y, x)`` arrays of one shape (in memory or lazy), the first the image chosen.

    Raises
    ------
    ValueError
        For fewer than two arrays, or arrays that are not 3D or not of one shape.
    """

    def __init__(self, arrays: Sequence[Any]) -> None:
        arrays = tuple(arrays)
        if len(arrays) < 2:
            raise ValueError(f"a channel stack needs two or more images, got {len(arrays)}")
        shapes = {tuple(int(n) for n in a.shape) for a in arrays}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"channels must be 3D images of one shape (z, y, x), got shapes {sorted(shapes)}")
        self.arrays = arrays
        #: ``(c, z, y, x)``.
        self.shape: tuple[int, ...] = (len(arrays), *next(iter(shapes)))
        self.dtype = np.result_type(*(np.dtype(a.dtype) for a in arrays))
        self.ndim = 4

    def holds(self, arrays: Sequence[Any]) -> bool:
        """Whether this stacks exactly ``arrays`` (the same array objects, in order)."""
        arrays = tuple(arrays)
        return len(arrays) == len(self.arrays) and all(a is b for a, b in zip(arrays, self.arrays))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype if dtype is None else dtype)
        for channel, array in zip(out, self.arrays):
            channel[...] = np.asarray(array)
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self)[key]
