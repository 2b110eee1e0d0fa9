"""zarr stores: plain zarr arrays and OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3).

* Plain array: ``(z, y, x)`` or ``(c, z, y, x)``; spacing from ``attrs["spacing"]``
  (``(z, y, x)``, default 1). A plain group holding an array named ``key``
  (``"image"``, ``"labels"``) reads that array.
* OME-Zarr: the first ``multiscales`` entry; ``level`` picks a dataset (0 = full
  resolution); spacing is that dataset's ``scale`` transform (times the
  multiscale-wide one, if any) on the ``z, y, x`` axes; a ``c`` axis is the
  channel axis and a size-1 ``t`` axis is dropped (5D ``tczyx`` from
  bioformats2raw). ``key="labels"`` reads the first image of the NGFF
  ``labels`` group if there is one (else the image itself: a mask file).

The NGFF metadata are parsed here with zarr alone (the ome-zarr library is not
needed). A directory whose root attributes hold ``napari_sparseseg_session`` is
a session store (its own reader), never a volume.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core.volume import Spacing
from .base import VolumeFile, VolumeFileError, check_level, checked_origin, checked_spacing

#: Root attribute that marks a napari-sparseseg session store.
SESSION_ATTRIBUTE = "napari_sparseseg_session"
#: Root attribute that marks a mask (or probabilities) this package wrote: the only zarr data a new mask replaces.
OUTPUT_ATTRIBUTE = "napari_sparseseg_output"
#: NGFF version written by :func:`write_ome_zarr`.
NGFF_VERSION = "0.5"
ZarrKind = Literal["array", "ome", "session", "group"]
_METADATA = ("zarr.json", ".zarray", ".zgroup")


def is_zarr_dir(path: Path) -> bool:
    """A directory with zarr v2 or v3 metadata at its root."""
    return path.is_dir() and any((path / m).is_file() for m in _METADATA)


def _root(path: Path) -> tuple[str, dict] | None:
    """``(node type, root attributes)`` of a zarr directory from its metadata files alone; None if unreadable."""
    try:
        if (path / "zarr.json").is_file():
            meta = json.loads((path / "zarr.json").read_text())
            node, attrs = meta.get("node_type"), meta.get("attributes") or {}
        elif (path / ".zarray").is_file() or (path / ".zgroup").is_file():
            node = "array" if (path / ".zarray").is_file() else "group"
            zattrs = path / ".zattrs"
            attrs = json.loads(zattrs.read_text()) if zattrs.is_file() else {}
        else:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return (node, attrs) if isinstance(attrs, dict) else None


def zarr_kind(path: Path) -> ZarrKind | None:
    """Classify a zarr directory from its root metadata alone (no zarr import, no chunk reads).

    Returns ``None`` for anything that is not a readable zarr directory.
    """
    root = _root(path)
    if root is None:
        return None
    node, attrs = root
    if SESSION_ATTRIBUTE in attrs:
        return "session"
    if node == "array":
        return "array"
    if node != "group":
        return None
    return "ome" if "multiscales" in attrs or "multiscales" in (attrs.get("ome") or {}) else "group"


#: Root attribute of a store written by bioformats2raw: its (first) image is the OME-Zarr group ``0``.
BIOFORMATS2RAW = "bioformats2raw.layout"


def holds_a_volume(path: Path) -> bool:
    """Whether a plain zarr group (:func:`zarr_kind` ``"group"``) holds a volume :func:`read_zarr` reads: an
    ``image`` array, or a bioformats2raw layout's image ``0`` (from the metadata files alone)."""
    root = _root(path)
    if root is None or root[0] != "group":
        return False
    if BIOFORMATS2RAW in root[1]:
        return zarr_kind(path / "0") == "ome"
    image = _root(path / "image")
    return image is not None and image[0] == "array"


def read_zarr(path: Path, key: str = "image", level: int = 0, lazy: bool = False) -> VolumeFile:
    """Read a plain zarr array or one level of an OME-Zarr image (see the module notes)."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 (missing or broken metadata raise many types)
        raise VolumeFileError(f"{path}: cannot read as zarr; no valid zarr metadata "
                              f"({type(exc).__name__}: {exc})") from exc
    try:
        return _read_node(path, node, key, level, lazy)
    except VolumeFileError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:  # metadata of wrong types or shape
        raise VolumeFileError(f"{path}: malformed zarr metadata ({type(exc).__name__}: {exc})") from exc


def _read_node(path: Path, node: Any, key: str, level: int, lazy: bool) -> VolumeFile:
    """:func:`read_zarr` of an opened zarr array or group."""
    import zarr

    if isinstance(node, zarr.Array):
        return _plain(path, node, level, lazy)
    attrs = node.attrs.asdict()
    if SESSION_ATTRIBUTE in attrs:
        raise VolumeFileError(f"{path}: is a napari-sparseseg session store, not a volume; open it as a session")
    if BIOFORMATS2RAW in attrs and isinstance(node.get("0"), zarr.Group):  # its first image (series 0)
        return _read_node(path / "0", node["0"], key, level, lazy)
    multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if multiscales:
        if key == "labels" and ("labels" in node or (path / "labels").is_dir()):  # never the image as its labels
            return _ome_labels(path, node, level, lazy)
        return _ome(path, node, multiscales, level, lazy)
    child = node.get(key) if key else None
    if isinstance(child, zarr.Array):
        return _plain(path, child, level, lazy)
    names = sorted(node.keys())
    raise VolumeFileError(f"{path}: a zarr group that is neither an array nor OME-Zarr (no 'multiscales' "
                          f"metadata, no array named {key!r}; it holds {names})")


def _check_chunks(path: Path, arr: Any) -> None:
    """Refuse an array whose metadata declares empty chunks (read lazily, it would divide by zero at the first read,
    in the middle of training)."""
    if any(int(c) < 1 for c in arr.chunks):
        raise VolumeFileError(f"{path}: zarr chunks {tuple(arr.chunks)} must be at least 1 voxel along every axis")


def _plain(path: Path, arr: Any, level: int, lazy: bool) -> VolumeFile:
    check_level(path, level, 1)
    _check_chunks(path, arr)
    if arr.ndim not in (3, 4):
        raise VolumeFileError(f"{path}: zarr array of shape {arr.shape} is not 3D (z, y, x) or 4D (c, z, y, x)")
    spacing = checked_spacing(path, arr.attrs.get("spacing"))
    origin = checked_origin(path, arr.attrs.get("origin"))
    data = arr if lazy else _load(path, arr)
    return VolumeFile(data, spacing, None, 0 if arr.ndim == 4 else None, path, 0, 1,
                      "czyx" if arr.ndim == 4 else "zyx", origin)


def _load(path: Path, arr: Any) -> np.ndarray:
    try:
        return np.asarray(arr[...])
    except Exception as exc:  # noqa: BLE001 (missing or corrupt chunks)
        raise VolumeFileError(f"{path}: cannot read the zarr chunks ({type(exc).__name__}: {exc})") from exc


def _axis_names(path: Path, axes: Any, ndim: int) -> list[str]:
    names = [str(a.get("name") if isinstance(a, dict) else a).lower() for a in (axes or [])]
    if not names and ndim == 5:  # NGFF 0.1-0.3 without axes: always tczyx
        names = list("tczyx")
    if len(names) != ndim:
        raise VolumeFileError(f"{path}: OME-Zarr axes {names} do not match the data's {ndim} dimensions")
    return names


#: Micrometres per NGFF space unit (the UDUNITS-2 names NGFF allows, and their usual abbreviations).
_NGFF_MICRONS = {"angstrom": 1e-4, "picometer": 1e-6, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
                 "centimeter": 1e4, "meter": 1e6, "pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "mm": 1e3,
                 "cm": 1e4, "m": 1e6}


def _to_one_unit(axes: Any, names: list[str]) -> dict[str, float]:
    """Per spatial axis, the factor that brings its ``unit`` to micrometres where the axes declare different
    known units (z in millimetres, y and x in micrometres); none where they agree or one is unknown."""
    units = {n: str(a.get("unit")).lower() for n, a in zip(names, axes or []) if isinstance(a, dict)
             and n in "zyx" and a.get("unit") is not None}
    if len(set(units.values())) < 2 or not set(units.values()) <= set(_NGFF_MICRONS):
        return {}
    return {n: _NGFF_MICRONS[u] for n, u in units.items()}


def _scale(transforms: Any, n: int, kind: str = "scale") -> np.ndarray:
    """The ``scale`` (or ``translation``) transform of an NGFF list; ones (zeros) where there is none."""
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == kind:
            return np.asarray(t[kind], dtype=float)
    return np.ones(n) if kind == "scale" else np.zeros(n)


def _ome(path: Path, group: Any, multiscales: list, level: int, lazy: bool) -> VolumeFile:
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    check_level(path, level, len(datasets))
    try:
        arr = group[datasets[level]["path"]]
    except Exception as exc:  # noqa: BLE001
        raise VolumeFileError(f"{path}: OME-Zarr level {level} (dataset {datasets[level].get('path')!r}) "
                              f"cannot be opened ({type(exc).__name__}: {exc})") from exc
    _check_chunks(path, arr)
    names = _axis_names(path, ms.get("axes"), arr.ndim)
    scale = _scale(datasets[level].get("coordinateTransformations"), arr.ndim)
    scale = scale * _scale(ms.get("coordinateTransformations"), arr.ndim)
    if len(scale) != arr.ndim:
        raise VolumeFileError(f"{path}: OME-Zarr scale {scale.tolist()} does not match axes {names}")
    drop = [i for i, a in enumerate(names) if a == "t" and arr.shape[i] == 1]
    kept = [a for i, a in enumerate(names) if i not in drop]
    if sorted(kept) not in (sorted("zyx"), sorted("czyx")):
        raise VolumeFileError(f"{path}: OME-Zarr axes {names} (shape {tuple(arr.shape)}) are not a 3D volume; "
                              "need z, y, x, optionally c, and t only of size 1")
    unit = _to_one_unit(ms.get("axes"), names)  # mixed units: all in micrometres, as an OME-TIFF's
    spacing = checked_spacing(path, [scale[names.index(a)] * unit.get(a, 1.0) for a in "zyx"])
    outer = ms.get("coordinateTransformations")  # NGFF: the dataset's scale, then its translation, then these
    shift = _scale(datasets[level].get("coordinateTransformations"), arr.ndim, "translation")
    shift = shift * _scale(outer, arr.ndim) + _scale(outer, arr.ndim, "translation")
    if len(shift) != arr.ndim:
        raise VolumeFileError(f"{path}: OME-Zarr translation {shift.tolist()} does not match axes {names}")
    origin = checked_origin(path, [shift[names.index(a)] * unit.get(a, 1.0) for a in "zyx"])
    index = tuple(0 if i in drop else slice(None) for i in range(arr.ndim))
    if lazy:
        data = arr
        if drop:
            import dask.array as da

            data = da.from_zarr(arr)[index]
    else:
        data = _load(path, arr)[index]
    channel_axis = kept.index("c") if "c" in kept else None
    return VolumeFile(data, spacing, None, channel_axis, path, level, len(datasets), "".join(kept), origin)


def _ome_labels(path: Path, group: Any, level: int, lazy: bool) -> VolumeFile:
    try:
        labels = group["labels"]
        first = (labels.attrs.get("ome") or {}).get("labels") or labels.attrs.get("labels")
        image = labels[first[0]]
        attrs = image.attrs.asdict()
    except Exception as exc:  # noqa: BLE001
        raise VolumeFileError(f"{path}: OME-Zarr image has no readable 'labels' group ({exc})") from exc
    multiscales = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        raise VolumeFileError(f"{path}: OME-Zarr label image {first[0]!r} has no multiscales metadata")
    return _ome(path, image, multiscales, level, lazy)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(int(n), 64) for n in shape)


def is_output(path: Path, kind: str | None = None) -> bool:
    """Whether ``path`` is a zarr store this package wrote (:data:`OUTPUT_ATTRIBUTE`): as ``kind`` (``"mask"`` or
    ``"probabilities"``), or either. A store without the mark (an image, another tool's mask, a mask written before
    the mark existed) is never taken for one: it could be an image of integers with a ``spacing``, as the docs
    describe one."""
    root = _root(path) if path.is_dir() else None
    mark = root[1].get(OUTPUT_ATTRIBUTE) if root is not None else None
    return bool(mark) and (kind is None or mark == kind)


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything but an empty folder or a mask this package wrote (:func:`is_output`).

    An image, another tool's mask, an OME-Zarr with labels beside its image or a session store stays whole: a
    mask written over it would delete it.

    Raises
    ------
    VolumeFileError
        If ``path`` is a file, a folder that is not a zarr store, a session store, or zarr data this package did not
        write as a mask.
    """
    if not path.exists() or (path.is_dir() and not any(path.iterdir())) or is_output(path):
        return
    kind = zarr_kind(path) if path.is_dir() else None
    if kind is None:
        raise VolumeFileError(f"{path}: exists and is not a zarr store; refusing to overwrite it")
    if kind == "session":
        raise VolumeFileError(f"{path}: is a napari-sparseseg session store; refusing to overwrite it with a mask")
    raise VolumeFileError(f"{path}: holds zarr data this plugin did not write as a mask (an image, or another "
                          "tool's mask); refusing to replace it: choose another name, or remove it first")


def output_attributes(spacing: Spacing, origin: Sequence[float] | None = None, kind: str = "mask") -> dict[str, Any]:
    """The root attributes of a zarr mask or probabilities array (``kind``): its spacing, origin (if any) and
    :data:`OUTPUT_ATTRIBUTE`."""
    attrs: dict[str, Any] = {"spacing": [float(s) for s in spacing], OUTPUT_ATTRIBUTE: kind}
    if origin is not None and any(origin):
        attrs["origin"] = [float(v) for v in origin]
    return attrs


def write_zarr(path: Path, mask: np.ndarray, spacing: Spacing, origin: Sequence[float] | None = None) -> None:
    """Write a plain zarr v3 array ``(z, y, x)``, 64^3 chunks, with ``attrs["spacing"]`` (and ``"origin"``)."""
    import zarr

    check_replaceable(path)
    arr = zarr.create_array(str(path), shape=mask.shape, chunks=_chunks(mask.shape), dtype=mask.dtype,
                            overwrite=True, zarr_format=3, dimension_names=("z", "y", "x"),
                            attributes=output_attributes(spacing, origin))
    arr[...] = mask


def write_ome_zarr(path: Path, mask: np.ndarray, spacing: Spacing, origin: Sequence[float] | None = None, *,
                   name: str = "mask") -> None:
    """Write a single-level OME-Zarr (NGFF 0.5, zarr v3): axes ``z, y, x``, dataset ``"0"`` scaled by spacing and
    translated to ``origin`` (if any)."""
    import zarr

    check_replaceable(path)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = group.create_array("0", shape=mask.shape, chunks=_chunks(mask.shape), dtype=mask.dtype,
                             dimension_names=("z", "y", "x"))
    arr[...] = mask
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in spacing]}]
    if origin is not None and any(origin):
        transforms.append({"type": "translation", "translation": [float(v) for v in origin]})
    group.attrs[OUTPUT_ATTRIBUTE] = "mask"
    group.attrs["ome"] = {"version": NGFF_VERSION, "multiscales": [{
        "name": name,
        "axes": [{"name": a, "type": "space"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }]}
