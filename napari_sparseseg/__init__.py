"""napari-sparseseg: dense 3D segmentation from a few painted slices.

The Qt-free engine lives in :mod:`napari_sparseseg.core`; the napari layer
(widget, worker bridge) is imported only by napari through the manifest.
"""

__version__ = "0.1.0"
