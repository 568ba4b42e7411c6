"""Image-versus-label checks used by the tests and the benchmark."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


def in_focus_hematoxylin_dice(image: np.ndarray, instance: np.ndarray, cells: List[Dict[str, Any]],
                              within_um: float = 1.0) -> float:
    """Dice of the Otsu-thresholded hematoxylin channel (``skimage.color.rgb2hed``) with the nuclei
    whose centre lies within ``within_um`` of the focal plane; pixels of the other (blurred)
    nuclei are left out of the comparison. A grey level of 0 (sensor noise clipped at black in the
    darkest nuclei) counts as 1: ``rgb2hed`` takes it to log(1e-6), some 15 times a dark nucleus's
    density, and a few such pixels can pull Otsu's threshold above every nucleus."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    h = rgb2hed(np.maximum(image, 1))[..., 0]
    mask = h > threshold_otsu(h)
    focus = np.zeros(len(cells) + 1, bool)
    focus[1:] = [abs(c["depth_to_focus_um"]) <= within_um for c in cells]
    target = focus[instance]
    mask &= target | (instance == 0)
    return float(2 * np.sum(mask & target) / (mask.sum() + target.sum()))
