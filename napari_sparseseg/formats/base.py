"""What every format module shares: the result type, the error type and mask checks.

Qt-free and light (NumPy only), so napari readers can import it at startup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.volume import Spacing, validate_spacing


class VolumeFileError(ValueError):
    """A file that cannot be read (or written) as a volume; the message names the path and says why."""


@dataclass(frozen=True, eq=False)  # arrays inside: identity, not element-wise, equality
class VolumeFile:
    """One volume read from a file, with the geometry that came with it.

    Attributes
    ----------
    data : np.ndarray or zarr.Array
        ``(z, y, x)``, or 4D with a channel axis at ``channel_axis`` (``axes`` spells
        the order, e.g. ``"czyx"`` or ``"zcyx"``). A ``zarr.Array`` (nothing read
        yet) when ``read_volume(..., lazy=True)`` opened a zarr or OME-Zarr store.
    spacing : tuple of float
        Physical voxel size ``(z, y, x)`` in the file's unit; ``(1, 1, 1)`` when the
        file says nothing.
    affine : np.ndarray or None
        NIfTI only: the 4x4 voxel-to-world matrix of the file, mapping NIfTI voxel
        indices ``(i, j, k, 1)`` (that is ``(x, y, z)``, the reverse of ``data``'s
        axes) to world millimetres. Hand it to ``save_mask(..., affine=...)`` so a
        mask overlays its source in other tools. ``None`` for other formats.
    channel_axis : int or None
        Axis of ``data`` holding channels, ``None`` for a 3D volume.
    path : Path
        The file or directory read.
    level : int
        Pyramid level read (0 = full resolution; OME-Zarr only has others).
    n_levels : int
        Levels the file holds (1 except for multiscale OME-Zarr).
    axes : str
        Axis names of ``data`` in order, lower case: ``"zyx"`` or with one ``"c"``.
    origin : tuple of float or None
        World position ``(z, y, x)`` of voxel ``(0, 0, 0)`` (napari's layer ``translate``): an OME-Zarr
        ``translation`` transform, or a plain zarr array's ``attrs["origin"]``; ``None`` where the file says
        nothing (NIfTI keeps its geometry in ``affine``).
    """

    data: Any
    spacing: Spacing
    affine: np.ndarray | None = None
    channel_axis: int | None = None
    path: Path = Path()
    level: int = 0
    n_levels: int = 1
    axes: str = "zyx"
    origin: tuple[float, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(z, y, x)`` (the channel axis left out)."""
        return tuple(int(n) for i, n in enumerate(self.data.shape) if i != self.channel_axis)  # type: ignore


def check_level(path: Path, level: int, n_levels: int) -> None:
    """Raise :class:`VolumeFileError` unless ``0 <= level < n_levels``."""
    if not isinstance(level, (int, np.integer)) or not 0 <= level < n_levels:
        raise VolumeFileError(f"{path}: level {level!r} is out of range; the file has {n_levels} "
                              f"level{'s' if n_levels != 1 else ''} (0..{n_levels - 1})")


def checked_spacing(path: Path, spacing: Any) -> Spacing:
    """:func:`validate_spacing`, with a :class:`VolumeFileError` naming ``path`` on bad metadata."""
    try:
        return validate_spacing(spacing)
    except (ValueError, TypeError) as exc:
        raise VolumeFileError(f"{path}: invalid spacing in the file's metadata ({exc})") from exc


def mask_for_writing(mask: np.ndarray, spacing: Any) -> tuple[np.ndarray, Spacing]:
    """Validate a mask and its spacing before any writer touches the disk.

    Parameters
    ----------
    mask : np.ndarray
        ``(z, y, x)`` of non-negative integers or bool (0 = background, 1..K).
    spacing : sequence of 3 float
        ``(z, y, x)`` voxel size.

    Returns
    -------
    mask, spacing
        ``uint8``/``uint16`` masks unchanged; other integer or bool masks as the
        smallest unsigned type holding their values (files other tools open).

    Raises
    ------
    ValueError
        A mask that is not 3D, not integer, or negative; bad spacing.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"a mask must be 3D (z, y, x), got shape {arr.shape}")
    if arr.dtype.kind not in "uib":
        raise ValueError(f"a mask must hold integers (0 = background, 1..K), got dtype {arr.dtype}")
    spacing = validate_spacing(spacing)
    if arr.dtype in (np.uint8, np.uint16):
        return arr, spacing
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise ValueError(f"a mask must be non-negative (0 = background, 1..K), got minimum {lo}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return arr.astype(dtype), spacing
    return arr.astype(np.uint64), spacing



def checked_origin(path: Path, origin: Any) -> tuple[float, float, float] | None:
    """An origin ``(z, y, x)`` of three finite floats from a file's metadata (None: absent or all zero)."""
    if origin is None:
        return None
    try:
        values = tuple(float(v) for v in origin)
    except (TypeError, ValueError) as exc:
        raise VolumeFileError(f"{path}: invalid origin in the file's metadata ({exc})") from exc
    if len(values) != 3 or not all(np.isfinite(values)):
        raise VolumeFileError(f"{path}: invalid origin in the file's metadata: {list(values)} (need 3 finite numbers)")
    return None if not any(values) else values
