"""Layer-menu commands (npe2): small conversions on a labels layer, and separate objects that learn from edits."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.types import LayerDataTuple

from ..core.encoding import LAYER_BACKGROUND, annotation_to_mask, layer_to_annotation


def annotation_to_mask_layer(layer: Labels) -> LayerDataTuple:
    """A plain mask (0 = background, 1..K) from an annotation layer (0 = unlabeled, 255 = background, k = class k).

    Unlabeled voxels become background. Offered under Layers > Segment.
    """
    data = _class_values(layer)
    mask = annotation_to_mask(layer_to_annotation(data))
    return mask, {"name": f"{layer.name} mask", **_placement(layer)}, "labels"


#: Key of an objects layer's metadata: the class map it was split from and the share of the split.
OBJECTS_KEY = "napari_sparseseg_objects"


def separate_objects_layer(layer: Labels) -> LayerDataTuple:
    """Separate objects from a class mask (0 = background, 1..K): touching objects of a class split by a
    watershed of the distance to the background (:func:`~napari_sparseseg.core.instances.split_instances`), one
    label per object. Offered under Layers > Segment; for a prediction or an accepted mask (background painted as
    a correction on the prediction layer, 255, counts as background). The new layer remembers its class map, so
    that **Separate objects again, learning from my edits** can learn from the merges and splits painted on it."""
    from ..core.instances import DEPTH_SHARE, split_instances

    data = _class_values(layer)
    if data.ndim != 3:
        raise ValueError(f"{layer.name}: separate objects needs a 3D mask (z, y, x), got {data.ndim} dimensions")
    data = np.where(data == LAYER_BACKGROUND, 0, data).astype(np.uint8)
    objects = split_instances(data, _spacing(layer))
    state = {"classes": data, "depth_share": DEPTH_SHARE}
    return objects, {"name": f"{layer.name} objects", **_placement(layer, **{OBJECTS_KEY: state})}, "labels"


def learn_object_edits(layer: Labels) -> None:
    """Split the objects again at the depth that reproduces the merges and splits painted on this objects layer.

    Paint one object's label over a neighbour to merge them (the fill bucket with the layer's "n edit dim" at 3
    fills the whole neighbour), or a new label over part of one to split it; then run this (Layers > Segment) on
    the layer. The split's depth is fitted to the objects you edited, in this round and the rounds before
    (:mod:`~napari_sparseseg.core.object_edits`), every other object is split again at it, and the objects you
    edited stay as you painted them. The layer is changed in place.
    """
    from napari.utils.notifications import show_info

    from ..core.instances import split_instances, typical_objects
    from ..core.object_edits import ObjectEdits, find_edits, fit_depth_share, resplit

    state = layer.metadata.get(OBJECTS_KEY)
    if state is None:
        raise ValueError(f"{layer.name}: not an objects layer made by Layers > Segment > Separate objects")
    classes, share = np.asarray(state["classes"]), float(state["depth_share"])
    edited = np.asarray(layer.data)
    if edited.shape != classes.shape:
        raise ValueError(f"{layer.name}: the layer is {edited.shape}, its objects were split from {classes.shape}")
    spacing = _spacing(layer)
    shown = split_instances(classes, spacing, depth_share=share)
    # The objects edited in earlier rounds: the depth learned then may split them again (so they are found again
    # here); they stay as painted and still teach the depth. Nothing painted since the last round: nothing new.
    before = state.get("edited")
    if before is None or np.shape(before) != edited.shape:
        before = np.zeros(edited.shape, bool)
    before = np.asarray(before, bool) & (edited > 0)
    edits = find_edits(shown, edited)
    if not edits.any or state.get("result") == _digest(edited):
        show_info(f"{layer.name}: no newly merged or split object found; paint one object's label over another to "
                  "merge them, or a new label over part of one to split it")
        return
    edits = ObjectEdits(edits.touched | before, merges=edits.merges, splits=edits.splits)
    mask = _classes_of(edited, classes)
    typical = typical_objects(mask, spacing)  # one distance transform for the fit and the split
    learned = fit_depth_share(mask, edited, edits.touched, spacing, current=share, typical=typical)
    objects = resplit(mask, edited, edits, learned, spacing, typical=typical)
    layer.data = objects
    layer.metadata[OBJECTS_KEY] = {"classes": mask, "depth_share": learned, "edited": edits.touched,
                                   "result": _digest(objects)}
    earlier = ", with the objects edited before" if before.any() else ""
    show_info(f"{layer.name}: learned from {edits.merges} merge(s) and {edits.splits} split(s){earlier}: objects "
              f"now split at {learned:g} of the typical radius (was {share:g}); {int(objects.max())} objects")


def _digest(objects: np.ndarray) -> str:
    """A digest of an objects layer's labels: whether anything was painted on it since a round ended."""
    import hashlib

    data = np.ascontiguousarray(objects)
    return hashlib.sha1(f"{data.shape} {data.dtype.str}".encode() + data.tobytes()).hexdigest()


def _spacing(layer: Labels) -> tuple[float, float, float]:
    return tuple(abs(float(s)) for s in layer.scale[-3:])  # a flipped layer (negative scale) has the same voxels


def _placement(layer: Labels, **metadata) -> dict:
    """Where ``layer`` lies in the world (scale, translate, rotate, shear, affine), for a layer made from it to
    line up with it, and ``metadata`` with its ``affine`` metadata (a NIfTI source's, which the writer puts back)."""
    source_affine = (layer.metadata or {}).get("affine")
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate), "rotate": np.asarray(layer.rotate),
            "shear": np.asarray(layer.shear), "affine": np.asarray(layer.affine.affine_matrix),
            "metadata": metadata if source_affine is None else {"affine": source_affine, **metadata}}


def _class_values(layer: Labels) -> np.ndarray:
    """``layer``'s data as class values (0..255), refusing values a class map cannot hold (they would wrap)."""
    data = np.asarray(layer.data)
    if data.size and (int(data.max()) > LAYER_BACKGROUND or int(data.min()) < 0):
        raise ValueError(f"{layer.name}: values {int(data.min())}..{int(data.max())} are not classes (0 background, "
                         f"1..{LAYER_BACKGROUND - 1}); is this an objects layer? Run this on a class mask or an "
                         "annotation layer")
    return data


def _classes_of(edited: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """uint8 class map of the edited objects: each voxel its old class; a voxel painted onto the background takes
    the class most of its object has (class 1 for an object painted wholly on the background)."""
    from ..core.object_edits import compact_ids

    mask = np.where(edited > 0, classes, 0).astype(np.uint8)
    added = (edited > 0) & (classes == 0)
    if added.any():
        edited = compact_ids(edited)  # a label may be any number up to 2**32: count per object, not per number
        ids = edited[added]
        counts = np.zeros((int(edited.max()) + 1, int(classes.max()) + 1), np.int64)
        inside = (edited > 0) & (classes > 0)
        np.add.at(counts, (edited[inside].astype(np.int64), classes[inside].astype(np.int64)), 1)
        majority = counts.argmax(axis=1)
        majority[counts.sum(axis=1) == 0] = 1
        mask[added] = majority[ids].astype(np.uint8)
    return mask
