"""Several 3D images of one volume read as the channels of one image: the sequences of an MRI, the stains of a stack.

napari opens a multi-channel file as one layer per channel; the window trains on
the chosen image and the layers ticked as its further channels, stacked here on
first read (in the bank's background thread, as a lazy image is read), so that
the first responder's filter bank and the net see every channel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from difflib import SequenceMatcher
from itertools import permutations
from typing import Any

import numpy as np

__all__ = ["ChannelStack", "channel_order", "matched_words"]


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


#: Most channels whose orders :func:`channel_order` compares (all of their permutations).
MAX_MATCHED_CHANNELS = 6
#: How much better by name another order must match, in mean similarity per channel (difflib's ratio, 0 to 1), to be
#: taken over the order given: a safety margin against reordering on a chance likeness, not a tuned value.
ORDER_MARGIN = 0.5


def distinctive(names: Sequence[str]) -> list[str]:
    """Each of ``names`` case-folded, less the start and the end that all of them share (``pat5_flair``,
    ``pat5_t1c`` -> ``flair``, ``t1c``)."""
    folded = [str(n).casefold() for n in names]
    prefix = len(os.path.commonprefix(folded))
    rests = [n[prefix:] for n in folded]
    suffix = len(os.path.commonprefix([r[::-1] for r in rests]))
    return [r[: len(r) - suffix] for r in rests]


def channel_order(trained: Sequence[str], given: Sequence[str]) -> list[int] | None:
    """The order in which to feed the ``given`` channels to a model trained on channels named ``trained``.

    Matches the names' distinctive parts (:func:`distinctive`; ``pat6_t1c``, ``pat6_flair`` against a model of
    ``pat5_flair``, ``pat5_t1c``) over every permutation.

    Returns
    -------
    list of int or None
        ``order[i]``: the index in ``given`` of the model's channel ``i``; None where the order given is kept: it
        matches by name as well as any other (within :data:`ORDER_MARGIN`), or the counts differ, or there are
        more than :data:`MAX_MATCHED_CHANNELS`.
    """
    n = len(given)
    if len(trained) != n or not 2 <= n <= MAX_MATCHED_CHANNELS:
        return None
    a, b = distinctive(trained), distinctive(given)
    likeness = [[SequenceMatcher(None, x, y).ratio() for y in b] for x in a]

    def score(order: Sequence[int]) -> float:
        return sum(likeness[i][j] for i, j in enumerate(order))

    best = max(permutations(range(n)), key=score)
    if score(best) - score(range(n)) < ORDER_MARGIN * n:
        return None
    return list(best)


def matched_words(trained: Sequence[str], given: Sequence[str], order: Sequence[int]) -> str:
    """What the user is told when :func:`channel_order` reorders: ``"channels matched to the model's by name: flair
    <- pat6_flair, t1c <- pat6_t1c"``."""
    return "channels matched to the model's by name: " + ", ".join(
        f"{name} <- {given[i]}" for name, i in zip(trained, order))
