"""The ideal (noise-free, unblurred) scene of the synthetic cells volume.

Each cell has

* a dim, textured cytoplasm (not a class: it is background in the labels, but
  it is what makes a single global threshold fail),
* an ellipsoidal nucleus with chromatin texture, a brighter periphery and dark
  nucleoli (class 1, ``"nucleus"``),
* a few small, bright vesicles in the cytoplasm (class 2, ``"vesicle"``).

:func:`paint_cells` draws the cells and nuclei, :func:`paint_vesicles` the
vesicles, into a signal, a mask-encoded label volume and an instance volume
(every nucleus and every vesicle its own id). Objects are defined in physical
space (voxel ``i`` at ``i * spacing``); arrays are indexed ``(z, y, x)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .shapes import ellipsoid_q, place_centers, random_rotation, smooth_field

__all__ = ["CELL_SCALE", "Cell", "nuclear_radius", "paint_cells", "paint_vesicles"]

#: Cell size relative to its nucleus.
CELL_SCALE = 1.5


class Cell(NamedTuple):
    """Geometry of one painted cell and its nucleus (physical units)."""

    center: np.ndarray
    axes: np.ndarray
    rot: np.ndarray
    nuc_center: np.ndarray
    nuc_axes: np.ndarray
    nuc_rot: np.ndarray


def nuclear_radius(shape: tuple[int, int, int], sp: np.ndarray, n_cells: int) -> float:
    """Typical nuclear radius ``r0`` for `n_cells` cells in the volume.

    Cells (about 1.5x the nucleus) fill ~45 % of the volume, capped by the
    smallest extent and floored at two of the coarsest steps so that a nucleus
    always covers several voxels on every axis.
    """
    shp = np.asarray(shape)
    volume = float(np.prod(shp * sp))
    r0 = (0.45 * volume / (n_cells * 4.0 / 3.0 * np.pi * CELL_SCALE**3)) ** (1 / 3)
    r0 = min(r0, 0.25 * float((shp * sp).min()))
    return max(r0, 2.0 * float(sp.max()))


def paint_cells(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    sp: np.ndarray,
    n_cells: int,
    r0: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Cell]]:
    """Paint cytoplasms and nuclei.

    Returns
    -------
    signal : np.ndarray
        ``(z, y, x)`` float32 ideal intensities.
    labels : np.ndarray
        ``(z, y, x)`` uint8, ``1`` on nuclei.
    instances : np.ndarray
        ``(z, y, x)`` uint16, nucleus ``i`` has id ``i + 1``.
    cells : list of Cell
        The cells whose nucleus was painted, in order.
    """
    extent = (np.asarray(shape) - 1) * sp  # physical span of voxel centres

    # smooth random fields shared by all objects
    wobble = smooth_field(rng, shape, np.maximum(0.5 * r0 / sp, 0.5))
    texture = smooth_field(rng, shape, np.maximum(0.08 * r0 / sp, 0.5))

    nuc_axes = r0 * rng.uniform(0.75, 1.25, size=(n_cells, 3))
    cell_axes = nuc_axes * CELL_SCALE * rng.uniform(0.9, 1.2, size=(n_cells, 3))
    centers = place_centers(rng, n_cells, extent, cell_axes.mean(axis=1) * 0.75)
    nuc_bright = rng.uniform(0.5, 1.0, size=n_cells)
    cyto_bright = rng.uniform(0.12, 0.3, size=n_cells)

    signal = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.uint16)
    cells: list[Cell] = []
    for i in range(n_cells):
        # the nucleus sits off-centre in its cell
        offset = rng.normal(scale=0.15 * r0, size=3)
        nuc_center = np.clip(centers[i] + offset, 0.0, extent)
        nuc_rot = random_rotation(rng)
        cell_rot = random_rotation(rng)

        got = ellipsoid_q(centers[i], cell_axes[i], cell_rot, sp, shape)
        if got is not None:
            box, q = got
            inside = q * (1.0 + 0.12 * wobble[box]) < 1.0
            cyto = cyto_bright[i] * (1.0 + 0.15 * texture[box])
            signal[box] = np.where(inside, np.maximum(signal[box], cyto), signal[box])

        got = ellipsoid_q(nuc_center, nuc_axes[i], nuc_rot, sp, shape)
        if got is None:  # cannot happen: the centre lies in the volume
            continue
        box, q = got
        qw = q * (1.0 + 0.08 * wobble[box])
        inside = qw < 1.0
        # chromatin texture, brighter periphery (heterochromatin at the envelope)
        val = 1.0 + 0.3 * texture[box] + 0.3 * np.clip((qw - 0.55) / 0.45, 0.0, 1.0)
        val = nuc_bright[i] * np.clip(val, 0.3, 1.8)
        for _ in range(rng.integers(1, 4)):  # dark nucleoli
            dirn = rng.normal(size=3)
            dirn /= np.linalg.norm(dirn)
            c = nuc_center + nuc_rot @ (dirn * nuc_axes[i] * rng.uniform(0.0, 0.5))
            r = r0 * rng.uniform(0.12, 0.22)
            g = [np.arange(s.start, s.stop) * sp[a] - c[a] for a, s in enumerate(box)]
            d2 = (
                g[0][:, None, None] ** 2
                + g[1][None, :, None] ** 2
                + g[2][None, None, :] ** 2
            )
            val = np.where(d2 < r * r, val * 0.45, val)
        signal[box] = np.where(inside, val, signal[box])
        labels[box] = np.where(inside, np.uint8(1), labels[box])
        instances[box] = np.where(inside, np.uint16(i + 1), instances[box])
        cells.append(Cell(centers[i], cell_axes[i], cell_rot, nuc_center, nuc_axes[i], nuc_rot))
    return signal, labels, instances, cells


def paint_vesicles(
    rng: np.random.Generator,
    signal: np.ndarray,
    labels: np.ndarray,
    instances: np.ndarray,
    cells: list[Cell],
    sp: np.ndarray,
    r0: float,
) -> None:
    """Paint small bright vesicles into the cytoplasm of `cells`, in place.

    Vesicle centres are snapped to voxel centres so that each one labels at
    least one voxel; vesicles never overwrite nuclei. If no vesicle lands in
    the volume (tiny volumes), one background voxel becomes a vesicle, so that
    every class is present.
    """
    shape = labels.shape
    shp = np.asarray(shape)
    r_v_min = 0.08 * r0
    for c_cell, a_cell, rot_cell, c_nuc, a_nuc, rot_nuc in cells:
        n_ves = int(rng.poisson(8))
        for _ in range(n_ves):
            for _try in range(20):
                u = rng.normal(size=3)
                u *= rng.uniform() ** (1 / 3) / np.linalg.norm(u)
                p = c_cell + rot_cell @ (u * a_cell * 0.9)
                # keep clear of the nucleus (in its own frame)
                if np.sum((rot_nuc.T @ (p - c_nuc) / a_nuc) ** 2) > 1.3**2:
                    break
            else:
                continue
            idx = np.round(p / sp).astype(int)
            if np.any(idx < 0) or np.any(idx >= shp):
                continue
            c = idx * sp
            r = max(r0 * rng.uniform(0.08, 0.15), r_v_min)
            got = ellipsoid_q(c, np.full(3, r), np.eye(3), sp, shape)
            assert got is not None
            box, q = got
            inside = (q < 1.0) & (labels[box] != 1)
            bright = rng.uniform(1.4, 2.8)
            signal[box] = np.where(inside, bright, signal[box])
            labels[box] = np.where(inside, np.uint8(2), labels[box])
            next_id = np.uint16(int(instances.max()) + 1)
            instances[box] = np.where(inside, next_id, instances[box])

    if not np.any(labels == 2):
        # Guarantee every class is present (tiny volumes): one vesicle on a
        # background voxel.
        free = np.flatnonzero(labels.ravel() == 0)
        if free.size:
            v = np.unravel_index(free[rng.integers(free.size)], shape)
            labels[v] = 2
            instances[v] = int(instances.max()) + 1
            signal[v] = 2.0
