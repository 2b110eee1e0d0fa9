"""TIFF volumes (tifffile): ImageJ hyperstacks, OME-TIFF and plain multi-page TIFF.

Spacing, in order of trust:

* OME-TIFF: ``PhysicalSizeZ/Y/X`` of the first image (converted to micrometres
  when the axes carry different units; a missing one counts as 1).
* ImageJ TIFF: ``XResolution``/``YResolution`` (pixels per unit) for x/y and
  the ``spacing`` entry of the ImageJ metadata for z.
* Anything else: ``(1, 1, 1)``. The DPI of a plain TIFF (often 72 per inch)
  says nothing about voxel size and is ignored.

Axes come from tifffile's series axes. Size-1 axes are dropped; ``Y`` and ``X``
must be there; ``C`` or ``S`` (samples, e.g. RGB) is the channel axis; the one
remaining axis is depth (``Z``, or a generic ``Q``/``I``/``T`` axis when there
is no ``Z``). The data keeps the file's axis order: an ImageJ hyperstack
``ZCYX`` comes back with ``channel_axis=1``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..core.volume import Spacing
from .base import VolumeFile, VolumeFileError, check_level, checked_spacing

#: Micrometres per unit for the OME length units seen in practice.
_MICRONS = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}


def read_tiff(path: Path, level: int = 0) -> VolumeFile:
    """Read the first series of a TIFF as ``(z, y, x)`` or with one channel axis."""
    import tifffile

    check_level(path, level, 1)
    damage = _TiffDamage()  # what tifffile logs of offsets past the file's end: it reads on with what is left
    logging.getLogger("tifffile").addHandler(damage)
    declared, pages = 0, 0
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            declared, pages = declared_images(tif), len(tif.pages)
            axes, data = series.axes.upper(), series.asarray()
            spacing = _ome_spacing(tif) if tif.is_ome else _imagej_spacing(tif) if tif.is_imagej else None
    except Exception as exc:  # noqa: BLE001 (tifffile raises many types for corrupt files)
        if declared > pages:  # cut at a page's end: the planes it declares past it are gone
            raise VolumeFileError(f"{path}: the file is truncated: its header declares {declared} images, the "
                                  f"file holds {pages}; copy or export it again") from exc
        raise VolumeFileError(f"{path}: cannot read as TIFF ({type(exc).__name__}: {exc})") from exc
    finally:
        logging.getLogger("tifffile").removeHandler(damage)
    held = int(np.prod([n for a, n in zip(axes, data.shape) if a not in "YXS"]))  # planes, channels, times
    if declared > held:
        raise VolumeFileError(f"{path}: the file is truncated: its header declares {declared} images, the "
                              f"file holds {held}; copy or export it again")
    try:
        data, axes = _volume_axes(path, data, axes)
    except VolumeFileError:
        if damage.messages:  # the planes past the damage are lost: say so, not "not a 3D volume"
            raise VolumeFileError(f"{path}: the file is damaged or truncated ({damage.messages[0]}); copy or "
                                  "export it again") from None
        raise
    channel_axis = next((i for i, a in enumerate(axes) if a == "c"), None)
    return VolumeFile(data, checked_spacing(path, spacing), None, channel_axis, path, 0, 1, axes)


class _TiffDamage(logging.Handler):
    """Collects tifffile's complaints of offsets that point past the file (a truncated or damaged file)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "invalid" in text and "offset" in text:
            self.messages.append(text)


def declared_images(tif) -> int:
    """Images an ImageJ header or the OME-XML of the first image declares (0 when there is none): more than the
    file holds means a truncated file."""
    try:
        if tif.is_imagej:
            return int((tif.imagej_metadata or {}).get("images", 0))
        if tif.is_ome:
            root = ET.fromstring(tif.ome_metadata)
            pixels = next(el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels")
            samples = max(1, max((int(ch.get("SamplesPerPixel", 1)) for ch in pixels
                                  if ch.tag.endswith("Channel")), default=1))
            return int(pixels.get("SizeZ", 1)) * int(pixels.get("SizeT", 1)) * int(pixels.get("SizeC", 1)) // samples
    except (TypeError, ValueError, StopIteration, ET.ParseError):
        return 0
    return 0


def _volume_axes(path: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop size-1 axes and name the rest ``z``, ``y``, ``x`` and optionally ``c``."""
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n > 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    kept = "".join(axes[i] for i in keep)
    names = []
    for a in kept:
        names.append("y" if a == "Y" else "x" if a == "X" else "c" if a in "CS" else "z")
    named = "".join(names)
    if sorted(named) not in (sorted("zyx"), sorted("czyx")) or named.count("c") > 1:
        raise VolumeFileError(f"{path}: TIFF axes {axes!r} with shape {tuple(data.shape)} are not a 3D volume "
                              "(need Y, X, one depth axis and at most one channel axis)")
    return data, named


def _imagej_spacing(tif) -> tuple[float, float, float]:
    """``(z, y, x)`` from ImageJ metadata (``spacing``) and X/YResolution (pixels per unit)."""
    page = tif.pages[0]
    ij = tif.imagej_metadata or {}

    def step(tag: str) -> float:
        res = page.tags.get(tag)
        if res is None or not res.value[0]:
            return 1.0
        return res.value[1] / res.value[0]

    return float(ij.get("spacing", 1.0)), step("YResolution"), step("XResolution")


def _ome_spacing(tif) -> tuple[float, float, float]:
    """``(z, y, x)`` from the OME-XML ``Pixels`` of the first image (micrometres if units differ)."""
    root = ET.fromstring(tif.ome_metadata)
    pixels = next(el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels")
    sizes, units = [], []
    for ax in "ZYX":
        sizes.append(float(pixels.get(f"PhysicalSize{ax}", 1.0)))
        units.append(pixels.get(f"PhysicalSize{ax}Unit", "µm") if f"PhysicalSize{ax}" in pixels.attrib else None)
    given = {u for u in units if u is not None}
    if len(given) > 1 and given <= set(_MICRONS):
        sizes = [s * _MICRONS[u] if u else s for s, u in zip(sizes, units)]
    return tuple(sizes)  # type: ignore[return-value]


def write_tiff(path: Path, mask: np.ndarray, spacing: Spacing) -> None:
    """Write an ImageJ ``ZYX`` stack: x/y steps as resolution, the z step as ImageJ ``spacing``."""
    import tifffile

    if mask.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"an ImageJ TIFF mask must be uint8 or uint16, got {mask.dtype} (more than 65535 labels)")
    tifffile.imwrite(path, mask, imagej=True, resolution=(1 / spacing[2], 1 / spacing[1]),
                     metadata={"spacing": spacing[0], "axes": "ZYX"}, compression="zlib")
