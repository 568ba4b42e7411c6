"""Cycles' pixel filter in numpy: what the film makes of a tissue sheet in the focal plane.

Every ray of a pixel, whatever its lens sample, crosses the focal plane at the film point it was
shot from. A sheet there multiplies each path by its transmittance at that point, so the pixel is
the filter-weighted mean of transmittance times the rest of the path. Multiplying the render of
everything else by the filtered sheet is that mean wherever the two are uncorrelated within the
filter's footprint (about one and a half pixels); the sheet then costs no transparent bounce and
no texture lookup per path, and adds no sampling noise. Cycles samples its filter per axis, so the
filter here is separable too.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

PIXEL_FILTER_WIDTH_PX = 1.5  # Cycles' filter_width: Blackman-Harris reaching this far either side
_QUADRATURE_POINTS = 4001  # per filter, for its taps


def blackman_harris(offset_px: np.ndarray, width_px: float) -> np.ndarray:
    """Cycles' Blackman-Harris pixel filter (``scene/film.cpp``: the window spans twice the
    filter width), unnormalised, at sub-pixel offsets within +-``width_px``."""
    v = 2 * np.pi * (offset_px / (2 * width_px) + 0.5)
    return 0.35875 - 0.48829 * np.cos(v) + 0.14128 * np.cos(2 * v) - 0.01168 * np.cos(3 * v)


def filter_taps(width_px: float = PIXEL_FILTER_WIDTH_PX) -> np.ndarray:
    """Weights of a texture's pixels (offsets -r..r) in one filtered pixel: the filter averaged
    over the bilinear interpolation between pixel centres that Cycles' linear lookup makes."""
    u = np.linspace(-width_px, width_px, _QUADRATURE_POINTS)
    weight = blackman_harris(u, width_px)
    weight /= weight.sum()
    reach = int(np.ceil(width_px))
    offsets = np.arange(-reach, reach + 1)
    return np.array([np.sum(weight * np.maximum(0.0, 1 - np.abs(k - u))) for k in offsets])


def filtered(image: np.ndarray, width_px: float = PIXEL_FILTER_WIDTH_PX) -> np.ndarray:
    """``image`` (H, W, ...) as the film records it at its pixel centres, its edges extended (the
    EXTEND lookup of the sheet's texture)."""
    taps = filter_taps(width_px)
    rows = correlate1d(image, taps, axis=0, mode="nearest")
    return correlate1d(rows, taps, axis=1, mode="nearest")
