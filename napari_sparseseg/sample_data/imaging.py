"""Image formation of the synthetic volumes: optics and detector.

The ideal signal is blurred by an anisotropic Gaussian point-spread function
(wider along the optical axis ``z``), given out-of-focus haze, multiplied by a
smooth uneven illumination field (lateral gradient, vignetting and
attenuation with depth) and offset by autofluorescence (:func:`apply_optics`);
the detector then adds Poisson shot noise plus Gaussian read noise
(:func:`detect`).

All arrays are indexed ``(z, y, x)``; lengths are in physical units (the unit
of ``spacing``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "AUTOFLUORESCENCE",
    "HAZE_FRACTION",
    "HAZE_SIGMA_LATERAL",
    "PSF_SIGMA_AXIAL",
    "PSF_SIGMA_LATERAL",
    "apply_optics",
    "detect",
    "haze",
    "illumination",
]

# Optical model, in physical units (same unit as ``spacing``).
PSF_SIGMA_LATERAL = 0.35
PSF_SIGMA_AXIAL = 1.2
HAZE_SIGMA_LATERAL = 6.0  # out-of-focus light, much wider than the PSF
HAZE_FRACTION = 0.15
AUTOFLUORESCENCE = 0.04


def illumination(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray
) -> np.ndarray:
    """Smooth multiplicative illumination field in about ``[0.45, 1]``."""
    nz, ny, nx = shape
    z = np.linspace(0.0, 1.0, nz, dtype=np.float32)[:, None, None]
    y = np.linspace(-1.0, 1.0, ny, dtype=np.float32)[None, :, None]
    x = np.linspace(-1.0, 1.0, nx, dtype=np.float32)[None, None, :]
    theta = rng.uniform(0, 2 * np.pi)
    ramp = 0.5 * (1 + (np.cos(theta) * y + np.sin(theta) * x) / np.sqrt(2))  # 0 .. 1
    cy, cx = rng.uniform(-0.4, 0.4, size=2)
    vignette = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.1**2))
    depth = np.exp(-z * rng.uniform(0.15, 0.3))  # deeper planes are dimmer
    field = (1.0 - 0.3 * ramp) * vignette * depth
    return (field / field.max()).astype(np.float32)


def haze(signal: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Wide out-of-focus blur, computed on a 4x-binned grid for speed."""
    f = 4
    shape = signal.shape
    pad = [(0, (-n) % f) for n in shape]
    s = np.pad(signal, pad, mode="edge")
    b = s.reshape(s.shape[0] // f, f, s.shape[1] // f, f, s.shape[2] // f, f).mean(
        axis=(1, 3, 5)
    )
    sigma = np.array(
        [3.0 * HAZE_SIGMA_LATERAL, HAZE_SIGMA_LATERAL, HAZE_SIGMA_LATERAL]
    )
    b = ndi.gaussian_filter(b, sigma / (sp * f), mode="nearest", truncate=3.0)
    up = ndi.zoom(b, f, order=1, mode="nearest", grid_mode=True)
    return up[: shape[0], : shape[1], : shape[2]]


def apply_optics(
    rng: np.random.Generator, signal: np.ndarray, sp: np.ndarray
) -> np.ndarray:
    """PSF blur, out-of-focus haze, uneven illumination and autofluorescence.

    Parameters
    ----------
    rng : np.random.Generator
        Draws the illumination field.
    signal : np.ndarray
        ``(z, y, x)`` float32 ideal signal.
    sp : np.ndarray
        Physical voxel size ``(z, y, x)``.

    Returns
    -------
    np.ndarray
        The noise-free image, the shape of `signal`.
    """
    psf = np.array([PSF_SIGMA_AXIAL, PSF_SIGMA_LATERAL, PSF_SIGMA_LATERAL]) / sp
    img = ndi.gaussian_filter(signal, psf, mode="nearest", truncate=3.0)
    hz = haze(signal, sp)
    return (img + HAZE_FRACTION * hz) * illumination(rng, signal.shape, sp) + AUTOFLUORESCENCE


def detect(rng: np.random.Generator, img: np.ndarray, noise: float) -> np.ndarray:
    """Poisson shot noise plus Gaussian read noise, clipped at zero.

    Parameters
    ----------
    rng : np.random.Generator
        Draws the noise (nothing when `noise` is ``0``).
    img : np.ndarray
        ``(z, y, x)`` noise-free image.
    noise : float
        Non-negative level: ``1 / noise**2`` photons per unit intensity and a
        read noise of standard deviation ``noise / 2``.

    Returns
    -------
    np.ndarray
        ``(z, y, x)`` float32, non-negative.
    """
    if noise > 0:
        gain = 1.0 / noise**2  # photons per unit intensity
        img = rng.poisson(img.astype(np.float64) * gain) / gain
        img = img + rng.normal(scale=noise / 2, size=img.shape)
    return np.clip(img, 0.0, None).astype(np.float32)
