"""Preview PNG for people: the image beside the same image with instance outlines coloured by class."""

from __future__ import annotations

import numpy as np

from ..classes import colours

CLASS_COLOURS = colours()


def outlines(instance: np.ndarray) -> np.ndarray:
    """Pixels of an instance that touch a different id (4-neighbourhood)."""
    edge = np.zeros(instance.shape, bool)
    edge[:-1] |= instance[:-1] != instance[1:]
    edge[1:] |= instance[1:] != instance[:-1]
    edge[:, :-1] |= instance[:, :-1] != instance[:, 1:]
    edge[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    return edge & (instance > 0)


def preview(image: np.ndarray, instance: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """(H, 2W + 4, 3) uint8: image | 4 px white gap | image with class-coloured outlines and tint."""
    overlay = image.astype(np.float32)
    colour = CLASS_COLOURS[semantic].astype(np.float32)
    inside = instance > 0
    overlay[inside] = 0.75 * overlay[inside] + 0.25 * colour[inside]
    edge = outlines(instance)
    overlay[edge] = colour[edge]
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, overlay.astype(np.uint8)], axis=1)
