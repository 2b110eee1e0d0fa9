"""Per-format readers and writers behind :mod:`napari_sparseseg.io` (the public facade).

One module per format family: :mod:`.npz`, :mod:`.tiff`, :mod:`.nifti`,
:mod:`.zarr_store` (plain zarr and OME-Zarr); :mod:`.base` holds the shared
:class:`VolumeFile` and :class:`VolumeFileError`. Qt-free; the format
libraries (tifffile, nibabel, zarr) are imported only when a file is read.
"""

from .base import VolumeFile, VolumeFileError

__all__ = ["VolumeFile", "VolumeFileError"]
