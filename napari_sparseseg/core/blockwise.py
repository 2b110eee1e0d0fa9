"""Block-by-block prediction into an output array (zarr or NumPy), the region in view first.

Every block is predicted with the windows of the whole-volume grid that meet
it (see :func:`~.inference.plan_windows`), so the written result does not
depend on the block grid: it equals the whole-volume prediction. With a zarr
output the blocks default to its chunks, so each write covers whole chunks
and never touches a neighbour's.

Arrays: masks ``(z, y, x)`` uint8, mask encoding (0 = background, 1..K);
probabilities ``(K + 1, z, y, x)`` float32; uncertainty ``(z, y, x)`` float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .box import Box
from .encoding import merge_labels

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["iter_blocks", "predict_to_array"]


def iter_blocks(shape: Sequence[int], block: Sequence[int], first: Box | None = None) -> list[Box]:
    """Boxes of the block grid over ``shape`` (edge blocks clipped), those meeting ``first`` first.

    Parameters
    ----------
    shape : sequence of int
        ``(Z, Y, X)`` of the volume.
    block : sequence of int
        Block shape ``(z, y, x)``, each >= 1.
    first : Box, optional
        A region to cover first (e.g. the one in view); the other blocks
        follow in C order.

    Raises
    ------
    ValueError
        If ``shape`` or ``block`` is not three positive sizes.
    """
    shape = tuple(int(s) for s in shape)
    block = tuple(int(b) for b in block)
    if len(shape) != 3 or len(block) != 3 or min(shape) < 1 or min(block) < 1:
        raise ValueError(f"need a (z, y, x) shape and block of positive sizes, got shape {shape}, block {block}")
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    boxes = [Box((z, y, x), (min(z + block[0], shape[0]), min(y + block[1], shape[1]), min(x + block[2], shape[2])))
             for z, y, x in itertools.product(*ranges)]
    if first is None:
        return boxes
    first = first.clip(shape)

    def meets(b: Box) -> bool:
        return not first.empty and all(a0 < b1 and b0 < a1 for a0, a1, b0, b1 in
                                       zip(b.start, b.stop, first.start, first.stop))

    return [b for b in boxes if meets(b)] + [b for b in boxes if not meets(b)]


def _default_block(out: Any) -> tuple[int, int, int]:
    chunks = getattr(out, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) == 3 and all(isinstance(c, (int, np.integer)) for c in chunks):
        return tuple(int(c) for c in chunks)  # type: ignore[return-value]
    return (64, 256, 256)


def predict_to_array(trainer: Trainer, out: Any, *, block: Sequence[int] | None = None, first: Box | None = None,
                     probabilities: Any = None, uncertainty: Any = None, final: bool = False,
                     merge: bool = True, progress: Callable[[int, int, Box], None] | None = None) -> None:
    """Predict the trainer's volume block by block and write each block into ``out``.

    Parameters
    ----------
    trainer : Trainer
        Model and volume (its current EMA weights; see :meth:`Trainer.predict`).
    out : zarr array or np.ndarray
        uint8 ``(Z, Y, X)`` receiving the mask (mask encoding).
    block : sequence of int, optional
        Block shape ``(z, y, x)``; default ``out.chunks`` for a zarr array
        (each write is whole chunks), else ``(64, 256, 256)``.
    first : Box, optional
        Region predicted first (the one in view).
    probabilities : zarr array or np.ndarray, optional
        float32 ``(K + 1, Z, Y, X)`` receiving the class probabilities.
    uncertainty : zarr array or np.ndarray, optional
        float32 ``(Z, Y, X)`` receiving the normalised entropy.
    final : bool
        Use the final test-time mirroring (as ``SegmentationSession.segment``).
    merge : bool
        Replace predictions by the user's labels where the volume is labeled
        (as ``SegmentationSession.merge``).
    progress : callable, optional
        ``progress(done, total, box)`` after each block is written.

    Raises
    ------
    ValueError
        If an output's shape does not match the volume.
    """
    shape = tuple(trainer.volume.shape)
    if tuple(out.shape) != shape:
        raise ValueError(f"output of shape {tuple(out.shape)} does not match the volume {shape}")
    if uncertainty is not None and tuple(uncertainty.shape) != shape:
        raise ValueError(f"uncertainty output of shape {tuple(uncertainty.shape)} does not match the volume {shape}")
    if probabilities is not None and tuple(probabilities.shape[1:]) != shape:
        raise ValueError(f"probability output of shape {tuple(probabilities.shape)} does not match the volume "
                         f"(K + 1, {shape})")
    boxes = iter_blocks(shape, block or _default_block(out), first)
    for done, box in enumerate(boxes, 1):
        pred = trainer.predict(box, final=final)
        labels = pred.labels
        if merge:
            labels = merge_labels(labels, trainer.volume.labels[box.slices])
        out[box.slices] = labels
        if probabilities is not None:
            probabilities[(slice(None),) + box.slices] = pred.probabilities
        if uncertainty is not None:
            uncertainty[box.slices] = pred.uncertainty
        if progress is not None:
            progress(done, len(boxes), box)
