"""Synthetic sample volumes with dense ground truth (axes ``(z, y, x)``)."""

from .synthetic import SyntheticVolume, make_cells_volume

__all__ = ["SyntheticVolume", "make_cells_volume"]
