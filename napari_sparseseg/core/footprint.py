"""The memory a training session takes, about, said before it is built rather than learned from an out-of-memory kill.

Used by the window when an image is chosen (``plugin.layers.memory_problem``,
which adds its layers) and by the command line's ``train`` before it builds the
session. Pure arithmetic on shapes: nothing is read.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

#: Bytes an in-memory session holds per voxel beside the first responder's filter bank and context maps (whose size
#: :func:`~napari_sparseseg.core.feature_stack.responder_bytes` gives exactly): the peak over training, predictions and
#: the final segmentation, one image channel and two foreground classes; least squares over 1.8, 3.5 and 7.1 Mvoxel
#: volumes, 123 and 101 bytes per voxel in two runs (``benchmarks/session_memory.py``, ``results/session_memory.txt``;
#: 135 and 169 before the filter bank's temporaries were cut), rounded up.
SESSION_BYTES_PER_VOXEL = 125
#: What a session holds whatever the volume (torch, the model, the optimiser): 0.8-0.9 GiB in the same measurement.
SESSION_FIXED_BYTES = 1 << 30
#: Per foreground class beyond two: three float32 class-probability maps (the first responder's, the net's, the one
#: shown), an upper bound: eight classes against two measured about 3 (one comparable run, the peak's noise is
#: about 15 bytes per voxel; ``benchmarks/session_memory.py --classes``, ``results/session_memory_classes.txt``).
CLASS_BYTES_PER_VOXEL = 12
#: Per image channel beyond the first: the normalised float32 image the session keeps in each of its two intensity
#: views (``TrainConfig.intensity_views``); assumed, not measured.
CHANNEL_BYTES_PER_VOXEL = 8


def volume_bytes(shape: Sequence[int], num_classes: int, channels: int = 1, extra_per_voxel: int = 0) -> int:
    """Memory one volume of ``shape`` ``(z, y, x)`` takes in a session, about, beside the first responder's bank
    (``extra_per_voxel``: what the caller holds of it besides, such as the window's layers or a lazy image read
    in)."""
    per_voxel = (SESSION_BYTES_PER_VOXEL + CLASS_BYTES_PER_VOXEL * max(0, num_classes - 2)
                 + CHANNEL_BYTES_PER_VOXEL * max(0, channels - 1) + extra_per_voxel)
    return math.prod(int(n) for n in shape) * per_voxel


def bank_bytes(shape: Sequence[int], spacing: Sequence[float], num_classes: int, channels: int = 1) -> int:
    """The first responder's filter bank and context maps for a volume of ``shape``, on the grid it would choose
    (:func:`~.feature_stack.choose_grid`: in half precision or binned when the full bank would not fit)."""
    from .binning import binned_shape
    from .config import ResponderConfig
    from .feature_stack import choose_grid, responder_bytes

    shape = tuple(int(n) for n in shape)
    grid = choose_grid(shape, spacing, bank_budget(ResponderConfig().max_feature_bytes), channels, max(1, num_classes))
    if grid is None:
        return 0
    return responder_bytes(binned_shape(shape, grid.factors), channels, max(1, num_classes), grid.itemsize)


@functools.cache
def physical_memory() -> int:
    """This machine's physical memory in bytes (read once: it does not change while a session runs)."""
    try:
        import psutil
    except ImportError:  # psutil comes with the window; the core reads the POSIX counters
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return int(psutil.virtual_memory().total)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (psutil's ``available``; the POSIX free pages without
    psutil; None where neither is known)."""
    try:
        import psutil
    except ImportError:
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
        except (ValueError, OSError):  # a POSIX without the counter (macOS)
            return None
    return int(psutil.virtual_memory().available)


def bank_budget(max_feature_bytes: int) -> int:
    """The bytes the first responder's filter bank may take: ``max_feature_bytes``, at most half this machine's
    memory (a session store's or model file's settings may allow more than the machine has)."""
    return min(max_feature_bytes, physical_memory() // 2)


def too_large(what: str, need: int, total: int | None, advice: str, where: str = "here") -> str | None:
    """``"WHAT is too large to train on WHERE: about N GiB, this machine has M GiB. ADVICE"``, or None when
    ``need`` bytes fit in ``total`` (default :func:`physical_memory`)."""
    total = physical_memory() if total is None else total
    if need <= total:
        return None
    return (f"{what} is too large to train on {where}: about {need / 2**30:.0f} GiB, this machine has "
            f"{total / 2**30:.0f} GiB. {advice}")


def session_bytes(shape: Sequence[int], spacing: Sequence[float], num_classes: int, channels: int = 1,
                  others: Sequence[tuple[Sequence[int], int]] = ()) -> int:
    """Memory a session on an in-memory volume takes, about: the fixed costs, the volume (:func:`volume_bytes`), its
    first responder's bank (:func:`bank_bytes`) and ``others``, ``(shape, channels)`` of further training volumes
    (which get no bank).

    Parameters
    ----------
    shape, spacing : sequence
        ``(z, y, x)`` of the session's volume and its voxel size.
    num_classes : int
        Foreground classes.
    channels : int
        Image channels.
    others : sequence of (shape, channels)
        The session's other training volumes.
    """
    return (SESSION_FIXED_BYTES + bank_bytes(shape, spacing, num_classes, channels)
            + volume_bytes(shape, num_classes, channels) + sum(volume_bytes(s, num_classes, c) for s, c in others))
