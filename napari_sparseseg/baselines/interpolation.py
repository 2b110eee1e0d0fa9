"""Slice-interpolation baseline: morphological contour interpolation (ITK).

Fills the gaps between annotated slices along one axis with ITK's
``MorphologicalContourInterpolator`` (Zukic et al., "ND morphological contour
interpolation", Insight Journal 2016). It is the "what would a user get by
interpolating their painted slices" baseline that a trained network must beat.

ITK is an optional dependency: ``pip install itk-morphologicalcontourinterpolation``.
It is imported lazily, so importing this module never needs it.
"""

from __future__ import annotations

import numpy as np

from napari_sparseseg.core.encoding import BACKGROUND, MASK_DTYPE, UNLABELED, annotation_to_mask

__all__ = ["interpolate_slices", "labeled_slice_indices"]

_INSTALL_HINT = "pip install itk-morphologicalcontourinterpolation"


def _load_itk():
    """Import ITK and the uint8 3D interpolator class, lazily.

    The wrapped class is taken from its own module: going through ITK's lazy
    template lookup (``itk.MorphologicalContourInterpolator[...]``) loads most
    of ITK and costs ~12 s more on first use.
    """
    try:
        import itk
    except ImportError as err:
        raise ImportError(f"interpolate_slices needs ITK's MorphologicalContourInterpolator: {_INSTALL_HINT}") from err
    try:
        from itk import itkMorphologicalContourInterpolatorPython as mci

        return itk, mci.itkMorphologicalContourInterpolatorIUC3
    except (ImportError, AttributeError):  # pragma: no cover - other ITK builds
        if not hasattr(itk, "MorphologicalContourInterpolator"):
            raise ImportError(f"ITK is installed without MorphologicalContourInterpolator: {_INSTALL_HINT}") from None
        return itk, None


def labeled_slice_indices(annotation: np.ndarray, axis: int = 0) -> list[int]:
    """Indices of the slices along ``axis`` that count as labeled.

    A slice counts as labeled when it holds any foreground voxel (annotation
    value >= 2), or when every voxel of it is labeled (a slice painted entirely
    background is a labeled slice with no foreground). A slice holding only a
    few background strokes does not count: it says nothing about where objects
    end.

    Parameters
    ----------
    annotation : np.ndarray
        Annotation-encoded labels (0 unlabeled, 1 background, k+1 class k).
    axis : int
        Axis along which slices are taken.

    Returns
    -------
    list of int
        Sorted slice indices.
    """
    a = np.moveaxis(np.asarray(annotation), axis, 0)
    flat = a.reshape(a.shape[0], -1)
    has_fg = (flat > BACKGROUND).any(axis=1)
    full = (flat != UNLABELED).all(axis=1)
    return [int(i) for i in np.flatnonzero(has_fg | full)]


def interpolate_slices(annotation: np.ndarray, axis: int = 0) -> np.ndarray:
    """Dense class map by morphological contour interpolation between labeled slices.

    Each foreground class is interpolated separately between consecutive
    labeled slices along ``axis`` (see :func:`labeled_slice_indices`); a labeled
    slice without a class makes objects of that class taper off towards it.
    Nothing is extrapolated beyond the first and last labeled slice. Labeled
    voxels keep their annotated class in the output.

    Parameters
    ----------
    annotation : np.ndarray
        Annotation-encoded labels, shape (z, y, x): 0 unlabeled, 1 background,
        ``k + 1`` foreground class ``k`` (at most 254 classes).
    axis : int
        Axis of the annotated slices: 0 = z (axial, xy slices), 1 = y, 2 = x.
        Negative values count from the end.

    Returns
    -------
    np.ndarray
        uint8 class map in mask encoding (0 background, 1..K classes), shape
        (z, y, x).

    Raises
    ------
    ValueError
        If ``annotation`` is not 3D, not integer-valued, or ``axis`` is out of
        range.
    ImportError
        If ``itk-morphologicalcontourinterpolation`` is not installed.
    """
    ann = np.asarray(annotation)
    if ann.ndim != 3:
        raise ValueError(f"annotation must be 3D (z, y, x); got shape {ann.shape}")
    if not (np.issubdtype(ann.dtype, np.integer) or ann.dtype == bool):
        raise ValueError(f"annotation must hold integers; got dtype {ann.dtype}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be in [-3, 2] for a 3D annotation; got {axis}")
    axis = axis % 3
    if ann.size and (int(ann.min()) < 0 or int(ann.max()) > 255):
        raise ValueError(f"annotation values must lie in [0, 255]; got range [{int(ann.min())}, {int(ann.max())}]")

    mask = annotation_to_mask(ann)  # labeled class or 0
    labeled = ann != UNLABELED
    # ITK label image: foreground class k -> k, background and unlabeled -> 0.
    fg = np.ascontiguousarray(np.where(ann > BACKGROUND, ann.astype(np.int64) - 1, 0).astype(np.uint8))
    classes = [int(c) for c in np.unique(fg) if c != 0]
    slices = labeled_slice_indices(ann, axis)
    if not classes or len(slices) < 2:
        # Nothing to interpolate between: the labeled voxels are all we know.
        return mask

    itk, filter_cls = _load_itk()
    # A copy: the filter must not share memory with a numpy array.
    image = itk.image_from_array(fg)
    filt = (filter_cls or itk.MorphologicalContourInterpolator[type(image)]).New()
    filt.SetInput(image)
    # Single-threaded: with several threads this filter corrupts the heap
    # (glibc aborts at interpreter exit with "malloc_consolidate(): unaligned
    # fastbin chunk detected", seen under pytest with Qt loaded).
    threader = filt.GetMultiThreader()
    threader.SetMaximumNumberOfThreads(1)
    threader.SetNumberOfWorkUnits(1)
    filt.SetNumberOfWorkUnits(1)
    itk_axis = 2 - axis  # numpy (z, y, x) is ITK index (x, y, z)
    filt.SetAxis(itk_axis)
    filt.SetUseCustomSlicePositions(True)
    for c in classes:
        filt.SetLabeledSliceIndices(itk_axis, c, slices)
    filt.Update()
    out = np.asarray(itk.array_from_image(filt.GetOutput())).astype(MASK_DTYPE, copy=True)
    if out.shape != ann.shape:  # pragma: no cover - guards ITK axis handling
        raise RuntimeError(f"ITK returned shape {out.shape} for input {ann.shape}")
    out[labeled] = mask[labeled]
    return out
