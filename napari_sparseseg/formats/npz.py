"""``.npz`` volumes: arrays ``image`` and/or ``labels``, optional ``spacing`` ``(z, y, x)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.volume import Spacing
from .base import VolumeFile, VolumeFileError, check_level, checked_spacing


def _arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` (those present) and ``spacing`` from an ``.npz``; no pickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise VolumeFileError(f"{path}: is a single .npy array, not an .npz archive")
            found = {k: data[k] for k in (*keys, "spacing") if k in data.files}
            if not set(keys) & set(found):
                raise VolumeFileError(f"{path}: no {' or '.join(repr(k) for k in keys)} array "
                                      f"(found {sorted(data.files)})")
        bad = sorted(k for k, v in found.items() if not isinstance(v, np.ndarray))
        if bad:
            raise VolumeFileError(f"{path}: entries {bad} are not NumPy arrays")
    except VolumeFileError:
        raise
    except MemoryError as exc:  # a header may declare any size (a few bytes can ask for terabytes)
        raise VolumeFileError(f"{path}: its arrays are too large to read into this machine's memory") from exc
    except Exception as exc:  # a damaged archive or header: zipfile and NumPy's header parser raise many kinds
        raise VolumeFileError(f"{path}: cannot read as .npz ({type(exc).__name__}: {exc})") from exc
    return found


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, Spacing]:
    """Read ``image``, optional ``labels`` and optional ``spacing`` (default 1, 1, 1) from an ``.npz``."""
    found = _arrays(Path(path), ("image", "labels"))
    if "image" not in found:
        raise VolumeFileError(f"{path}: no 'image' array (found {sorted(found)})")
    return found["image"], found.get("labels"), checked_spacing(Path(path), found.get("spacing"))


def read_npz(path: Path, key: str = "image", level: int = 0) -> VolumeFile:
    """Read array ``key`` (``image`` or ``labels``); a 4D array is taken as ``(c, z, y, x)``."""
    check_level(path, level, 1)
    if key not in ("image", "labels"):
        raise VolumeFileError(f"{path}: key must be 'image' or 'labels' for an .npz, got {key!r}")
    found = _arrays(path, (key,))
    arr = found[key]
    if arr.ndim not in (3, 4):
        raise VolumeFileError(f"{path}: '{key}' must be 3D (z, y, x) or 4D (c, z, y, x), got shape {arr.shape}")
    channel_axis = 0 if arr.ndim == 4 else None
    return VolumeFile(arr, checked_spacing(path, found.get("spacing")), None, channel_axis, path, 0, 1,
                      "czyx" if arr.ndim == 4 else "zyx")


#: Prefix of an ``.npz`` array holding a further channel of ``image`` (``image_t1c``: the T1c beside a FLAIR).
CHANNEL_PREFIX = "image_"


def further_channels(path: Path, shape: tuple[int, ...]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The further channels of an ``.npz``'s image (arrays ``image_<name>`` of its 3D ``shape``, by ``<name>``),
    and the names of the other arrays no reader here opens (``instances``, say)."""
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
    channels = {}
    for key in (k for k in names if k.startswith(CHANNEL_PREFIX)):
        try:
            array = _arrays(path, (key,))[key]
        except VolumeFileError:  # an object array, a damaged entry: left out (and named), the image opens
            continue
        if array.ndim == 3 and array.shape == tuple(shape) and array.dtype.kind in "uif":
            channels[key[len(CHANNEL_PREFIX):]] = array
    unread = [k for k in names if k not in ("image", "labels", "spacing")
              and k[len(CHANNEL_PREFIX):] not in channels]
    return channels, unread


def write_npz(path: Path, mask: np.ndarray, spacing: Spacing) -> None:
    """Write ``labels`` and ``spacing`` (float64) to a compressed ``.npz``."""
    with open(path, "wb") as fh:  # a file object: NumPy appends no second ".npz" (e.g. to "MASK.NPZ")
        np.savez_compressed(fh, labels=mask, spacing=np.asarray(spacing, np.float64))
