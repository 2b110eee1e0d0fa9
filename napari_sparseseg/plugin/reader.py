"""napari reader contribution: NIfTI, npz, TIFF, zarr and OME-Zarr with spacing as layer scale.

napari-free and light at import (the format libraries load when a file is
read). :func:`get_reader` returns ``None`` for anything it cannot open,
including a napari-sparseseg session store (a zarr directory whose root
attributes hold ``napari_sparseseg_session``; it has its own reader).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..formats.zarr_store import holds_a_volume, zarr_kind
from ..io import VolumeFileError, read_volume, volume_format

LayerData = tuple[Any, dict[str, Any], str]
#: Suffixes stripped from a file name to name its layers.
_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz", ".nii", ".npz", ".tiff", ".tif", ".zarr")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_layers` if ``path`` is one volume this plugin reads, else ``None`` (never raises)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        p = Path(path)
        kind = volume_format(p)
        if kind is None or not p.exists():
            return None
        if kind == "zarr" and not (zarr_kind(p) in ("array", "ome") or (zarr_kind(p) == "group"
                                                                         and holds_a_volume(p))):
            return None  # a session store (its own reader), a group holding no volume
    except (OSError, TypeError, ValueError):
        return None
    return read_layers


def layer_name(path: Path) -> str:
    """The file name without its volume suffix (``ct.nii.gz`` -> ``ct``)."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read a volume as napari layer data: an image layer with ``scale = spacing``, plus labels if stored.

    The image layer's ``metadata`` holds ``spacing``, ``source_path`` and, for
    NIfTI, the source ``affine`` (the writer puts it back into a saved mask).
    A multiscale OME-Zarr becomes a multiscale layer of lazy zarr arrays; an
    ``.npz`` with ``labels`` or an OME-Zarr with an NGFF ``labels`` group also
    gives a labels layer.

    Raises
    ------
    VolumeFileError
        The file is corrupt or holds no 3D volume (napari shows the message).
    """
    p = Path(path[0] if isinstance(path, (list, tuple)) else path)
    kind = volume_format(p)
    zarr = kind == "zarr"
    if _is_mask_file(p):  # a mask this plugin (or a tool marking label maps) wrote: one labels layer to paint on
        mask, problem = _as_labels(read_volume(p, key="labels"))
        if problem is not None:
            raise VolumeFileError(f"{p}: not a label map: {problem}")
        meta = {"spacing": mask.spacing, "source_path": str(p), **({"affine": mask.affine}
                                                                  if mask.affine is not None else {})}
        return [(mask.data, {"name": layer_name(p), "scale": mask.spacing,
                             "translate": mask.origin or (0.0, 0.0, 0.0), "metadata": meta}, "labels")]
    vol = read_volume(p, lazy=zarr)
    name = layer_name(p)
    meta: dict[str, Any] = {"spacing": vol.spacing, "source_path": str(p)}
    if vol.affine is not None:
        meta["affine"] = vol.affine
    data: Any = vol.data
    if vol.n_levels > 1:
        data = [vol.data] + [read_volume(p, level=i, lazy=True).data for i in range(1, vol.n_levels)]
    kwargs: dict[str, Any] = {"name": name, "scale": vol.spacing, "metadata": meta, "multiscale": vol.n_levels > 1}
    if vol.origin is not None:
        kwargs["translate"] = vol.origin
    if vol.channel_axis is not None:
        kwargs["channel_axis"] = vol.channel_axis
        kwargs["name"] = [f"{name} [{i}]" for i in range(vol.data.shape[vol.channel_axis])]
    layers: list[LayerData] = [(data, kwargs, "image")]
    if kind == "npz":
        layers += _further_channels(p, vol, kwargs)
    has_labels = (kind == "npz" and _npz_has_labels(p)) or (zarr and (p / "labels").is_dir())
    labels = _labels_beside(p, vol) if has_labels else None
    if labels is not None:
        layers.append((labels.data, {"name": f"{name} labels", "scale": labels.spacing,
                                     "translate": labels.origin or (0.0, 0.0, 0.0),
                                     "metadata": {"spacing": labels.spacing, "source_path": str(p)}}, "labels"))
    return layers


def _further_channels(path: Path, image: Any, kwargs: dict[str, Any]) -> list[LayerData]:
    """Image layers of an ``.npz``'s further channels (``image_t1c`` as ``<name> t1c``, over the image: the Data
    box's Channels list offers them), with a warning naming the arrays left out."""
    import warnings

    from ..formats.npz import further_channels

    channels, unread = further_channels(path, image.shape)  # (of a 4D image too: a channel more)
    if unread:
        warnings.warn(f"{path}: arrays {unread} are not opened (an .npz opens 'image', its further channels "
                      "'image_<name>' and 'labels')", stacklevel=2)
    base = {k: v for k, v in kwargs.items() if k not in ("channel_axis", "multiscale", "name", "metadata")}
    return [(data, {**base, "name": f"{layer_name(path)} {name}", "metadata": dict(kwargs["metadata"])}, "image")
            for name, data in channels.items()]


def _labels_beside(path: Path, image: Any) -> Any:
    """The labels stored beside ``image`` in ``path``, in memory (a labels layer is painted on; a zarr store is
    opened read-only), or None with a warning when they cannot be its labels (another shape, fractions,
    unreadable): the image opens all the same."""
    import warnings


    try:
        labels = read_volume(path, key="labels")
    except VolumeFileError as exc:
        warnings.warn(f"{path}: its labels are left out: {exc}", stacklevel=2)
        return None
    problem = None
    if labels.shape != image.shape:
        problem = f"they are {labels.shape}, the image {image.shape}"
    else:
        labels, problem = _as_labels(labels)
    if problem is not None:
        warnings.warn(f"{path}: its labels are left out: {problem}", stacklevel=2)
        return None
    return labels


def _as_labels(labels: Any) -> tuple[Any, str | None]:
    """``labels`` (a ``VolumeFile``) with float whole numbers as the smallest unsigned integers that hold them
    (napari's labels layers take integers only), or why they cannot be labels."""
    from dataclasses import replace

    import numpy as np

    if np.dtype(labels.data.dtype).kind != "f":
        return labels, None
    data = np.asarray(labels.data)
    if not (np.isfinite(data).all() and (data == np.round(data)).all() and (data.size == 0 or data.min() >= 0)):
        return labels, "it holds values that are not non-negative whole numbers"
    return replace(labels, data=data.astype(np.min_scalar_type(int(data.max()) if data.size else 0))), None


def _npz_has_labels(path: Path) -> bool:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return "labels" in data.files


def _is_mask_file(path: Path) -> bool:
    """Whether ``path`` holds a mask alone: a zarr store this package wrote as a mask, an ``.npz`` with ``labels``
    and no ``image``, or a NIfTI whose intent is a label map (``NIFTI_INTENT_LABEL``, which :func:`save_mask`
    sets). TIFF has no such mark: a TIFF mask opens as an image."""
    kind = volume_format(path)
    if kind == "zarr":
        from ..formats.zarr_store import is_output

        return is_output(path, "mask")  # not probabilities (floats, a class axis)
    if kind == "npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                return "labels" in data.files and "image" not in data.files
        except Exception:  # noqa: BLE001 (read_volume names what is wrong)
            return False
    if kind == "nifti":
        from ..formats.nifti import is_label_map

        return is_label_map(path)
    return False
