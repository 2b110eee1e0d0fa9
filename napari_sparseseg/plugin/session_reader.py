"""Session stores as napari files: their names, napari's reader preference for them, and the reader.

A session store (:mod:`napari_sparseseg.store`) opened in napari comes back as three layers: the image (``scale``
= spacing), the annotation labels (layer encoding: class k is k, background 255) and the last prediction (mask
encoding); each carries ``metadata["sparseseg_store"]`` = the store path. Each other volume the session learns
from comes back the same way (its layers also carry ``metadata["sparseseg_volume"]`` = its number ``n``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.encoding import annotation_to_layer, merge_labels
from ..store import is_session_store
from ..store_files import check_stored_volume, volume_folders

log = logging.getLogger(__name__)

#: Layer metadata key holding the path of the store a layer came from.
STORE_META = "sparseseg_store"
#: Layer metadata key holding the number ``n`` of the store's other volume a layer shows (1-based, in the order of
#: its ``volumes/`` folders: ``session.other_volumes[n - 1]``).
VOLUME_META = "sparseseg_volume"
LayerData = tuple[Any, dict[str, Any], str]


def sessions_home() -> Path:
    """Where autosaved sessions go: ``$NAPARI_SPARSESEG_HOME/sessions`` (default ``~/.napari-sparseseg``)."""
    return Path(os.environ.get("NAPARI_SPARSESEG_HOME") or "~/.napari-sparseseg").expanduser() / "sessions"


#: The name ending the widget gives session stores; with :func:`prefer_this_reader_for_stores`, ``File > Open``
#: opens them with this plugin without asking (any name works, but napari asks which reader to use).
STORE_SUFFIX = ".sparseseg"
STORE_SUFFIXES = (STORE_SUFFIX, ".zarr")


#: napari's reader preference for folders named ``*.sparseseg`` (a folder preference is matched with a separator).
STORE_READER_PATTERN = f"*{STORE_SUFFIX}{os.sep}"
PLUGIN_NAME = "napari-sparseseg"


def prefer_this_reader_for_stores() -> bool:
    """Record in napari's settings that folders named ``*.sparseseg`` open with this plugin.

    napari offers a folder to every reader that accepts folders, whatever its name, and asks the user to choose
    unless a preference matches; this writes the entry napari itself writes when the user ticks "remember this
    choice", for session-store folders only, and only when no preference for them exists (a user's choice
    stays). Returns whether it was written.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    if STORE_READER_PATTERN in plugins.extension2reader:
        return False
    plugins.extension2reader = {**plugins.extension2reader, STORE_READER_PATTERN: PLUGIN_NAME}
    return True


def store_stem(path: Path) -> str:
    """``path``'s name without the session-store ending (``.sparseseg`` or ``.zarr``)."""
    for suffix in STORE_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return path.name


def new_store_path() -> Path:
    """A fresh ``sessions/<timestamp>.sparseseg`` path under :func:`sessions_home`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = sessions_home() / f"{stamp}{STORE_SUFFIX}"
    n = 1
    while path.exists():
        n += 1
        path = sessions_home() / f"{stamp}-{n}{STORE_SUFFIX}"
    return path


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData] | None] | None:
    """napari reader hook: :func:`read_session` for a session store directory, else ``None`` (never raises)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return read_session if isinstance(path, (str, Path)) and is_session_store(path) else None


def read_session(path: str | list[str]) -> list[LayerData] | None:
    """Layer data of a store (image, annotation, prediction), or ``None`` with a logged warning if unreadable."""
    p = path[0] if isinstance(path, (list, tuple)) else path
    try:
        return store_layers(p)
    except Exception as exc:  # noqa: BLE001 (a reader returns None instead of raising)
        log.warning("napari-sparseseg: cannot read session store %s: %s", p, exc)
        from napari.utils.notifications import show_warning

        show_warning(f"napari-sparseseg: cannot open the session store {p}: {exc}")  # napari alone says "no data"
        return None


def store_layers(path: str | Path) -> list[LayerData]:
    """Read a session store as napari layer data without building a session (no torch import).

    Returns
    -------
    list of LayerDataTuple
        The image (``scale`` = spacing, metadata ``class_names``, ``class_colors``, ``spacing``),
        the annotation labels (uint8, layer encoding) and, once one was stored, the
        prediction (uint8, mask encoding); all with ``metadata["sparseseg_store"]``.
    """
    import zarr

    path = Path(path).resolve()
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    image, image_meta, stored_name = _image_of(root, attrs, path)
    name, scale = stored_name or store_stem(path), image_meta["scale"]
    where, source = _geometry_of(attrs, path)  # where the image lay, its NIfTI affine
    image_meta.update(name=name, **where, metadata={
        STORE_META: str(path), "spacing": scale, "class_colors": attrs.get("colors"),
        "class_names": tuple(attrs.get("class_names") or ()), **source})
    labels = np.asarray(root["labels"][...])
    layers: list[LayerData] = [
        (image, image_meta, "image"),
        (annotation_to_layer(labels), {"name": f"{name} annotation", "scale": scale, **where, "opacity": 0.7,
                                       "metadata": {"sparseseg_role": "annotation", STORE_META: str(path), **source}},
         "labels")]
    if "step" in root["prediction"].attrs:  # as it was on screen: labels, corrections too, over the prediction
        layers.append((merge_labels(np.asarray(root["prediction"][...]), labels),
                       {"name": "prediction", "scale": scale, **where, "opacity": 0.45,
                        "metadata": {"sparseseg_role": "prediction", STORE_META: str(path), **source}}, "labels"))
    for n, folder in enumerate(volume_folders(path), start=1):
        layers += _volume_layers(path, folder, n, f"{name} volume {n}")
    return layers


def _geometry_of(attrs: dict[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The layer keyword arguments (``translate``) and metadata (``affine``) that put a store's layers where its
    image lay (stores written before they were kept: nothing).

    Raises
    ------
    ValueError
        If the stored origin or affine is malformed.
    """
    from ..store_files import checked_geometry

    try:
        origin, affine = checked_geometry(attrs.get("origin"), attrs.get("affine"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return ({} if origin is None else {"translate": tuple(origin)}), ({} if affine is None else
                                                                       {"affine": np.asarray(affine)})


def _image_of(group: Any, attrs: dict[str, Any], where: Path) -> tuple[Any, dict[str, Any], str | None]:
    """A stored volume's image (copied in ``group``, or read from the file of its ``image_ref``), the layer keyword
    arguments it needs (``scale`` = spacing, ``channel_axis`` of a 4D image) and the name the user gave it (None
    when none was stored).

    Raises
    ------
    ValueError
        If the labels or prediction stored beside it do not fit it (:func:`~..store_files.check_stored_volume`).
    """
    from ..core.volume import validate_spacing
    from ..store import EAGER_IMAGE_BYTES
    from ..store_arrays import stored_image

    ref = attrs.get("image_ref")
    try:
        spacing = validate_spacing(attrs.get("spacing"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the stored spacing is invalid ({exc})") from exc
    image = stored_image(group, eager_image_bytes=EAGER_IMAGE_BYTES)  # a larger one stays lazy, as a session has it
    meta: dict[str, Any] = {"scale": tuple(float(s) for s in spacing)}
    shape = image.shape
    if image.ndim == 4:
        meta["channel_axis"] = axis = 0 if ref is None else int(attrs.get("channel_axis") or 0) % image.ndim
        shape = shape[:axis] + shape[axis + 1:]
    check_stored_volume(group, shape, ("labels", "prediction"), where)
    name = attrs.get("image_name")
    return image, meta, name if isinstance(name, str) and name else None


def _volume_layers(path: Path, folder: Path, n: int, default_name: str) -> list[LayerData]:
    """The image, annotation and (once stored) prediction layers of the store's ``n``-th other volume (in
    ``folder``; ``session.other_volumes[n - 1]`` once opened)."""
    import zarr

    group = zarr.open_group(str(folder), mode="r")
    attrs = dict(group.attrs)
    image, image_meta, stored_name = _image_of(group, attrs, folder)
    name, scale = stored_name or default_name, image_meta["scale"]
    where, source = _geometry_of(attrs, folder)
    tag = {STORE_META: str(path), VOLUME_META: n, **source}
    image_meta.update(name=name, **where, metadata={**tag, "spacing": scale})
    labels = np.asarray(group["labels"][...])
    layers: list[LayerData] = [
        (image, image_meta, "image"),
        (annotation_to_layer(labels), {"name": f"{name} annotation", "scale": scale, **where, "opacity": 0.7,
                                       "metadata": {"sparseseg_role": "volume_annotation", **tag}}, "labels")]
    if "step" in group["prediction"].attrs:
        layers.append((merge_labels(np.asarray(group["prediction"][...]), labels), {
            "name": f"{name} prediction", "scale": scale, **where, "opacity": 0.45,
            "metadata": {"sparseseg_role": "volume_prediction", **tag}}, "labels"))
    return layers
