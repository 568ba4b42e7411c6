"""What every export format shares: the writer interface, the class codes from the registry and the
file helpers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from ...classes import CLASSES
from ..dataset import png_resolution
from .patches import Patch


def registry_codes(attribute: str, absent: Optional[int] = None) -> Dict[int, int]:
    """Our class id -> the format's code, read from the class registry (``arctique/classes.py``);
    classes whose code is ``absent`` are left out (their nuclei are not exported)."""
    return {c.id: getattr(c, attribute) for c in CLASSES if getattr(c, attribute) != absent}


def instance_boxes(instance: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (n, 4: y1, y2, x1, x2, end-exclusive) and centroids (n, 2: row, column; the
    mean of the pixels) of instances 1..n, each present. In numpy, so that the exports install
    without scipy."""
    ys, xs = np.nonzero(instance)
    ids = instance[ys, xs].astype(np.int64) - 1
    boxes = np.empty((n, 4), np.int64)
    boxes[:, [0, 2]] = np.iinfo(np.int64).max
    boxes[:, [1, 3]] = -1
    for column, values, ufunc in ((0, ys, np.minimum), (1, ys + 1, np.maximum), (2, xs, np.minimum),
                                  (3, xs + 1, np.maximum)):
        ufunc.at(boxes[:, column], ids, values)
    count = np.bincount(ids, minlength=n)[:, None]
    centroids = np.column_stack([np.bincount(ids, ys, n), np.bincount(ids, xs, n)]) / count
    return boxes, centroids


def split_number(folder: Path) -> Optional[int]:
    """The number ending a split folder's name (``fold2``, ``split3``, ``1``), for formats that number
    their folds; None for any other name (the export's own folder)."""
    number = re.fullmatch(r"[A-Za-z_]*(\d+)", folder.name)
    return int(number.group(1)) if number else None


class Writer:
    """One export format. ``add`` is called once per patch, then ``close``; ``n_patches`` is known
    up front so that array formats can write into a memory-mapped file."""

    name: str = ""
    codes: Dict[int, int] = {}  # our class id -> the format's class code; other classes are dropped
    patch_px: Optional[int] = None  # the format's fixed patch side, when it has one
    native_mpp: Optional[float] = None  # the pixel size of the public dataset (um), when it has one
    feeds: str = ""  # the public training code that reads it
    max_tiles_per_field: Optional[int] = None  # when its file names number the tiles of a field

    def __init__(self, out: Path, n_patches: int) -> None:
        self.out, self.n_patches = out, n_patches
        out.mkdir(parents=True, exist_ok=True)

    def code_table(self) -> np.ndarray:
        """Array mapping our class id (index) to the format's code."""
        table = np.zeros(max(c.id for c in CLASSES) + 1, np.int64)
        for ours, code in self.codes.items():
            table[ours] = code
        return table

    def add(self, patch: Patch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Write what is collected over all patches (tables, array files)."""


def write_rgb_png(path: Path, image: np.ndarray, mpp: float) -> None:
    """An RGB PNG that records its pixel size (``mpp`` um)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", **png_resolution(mpp))


def write_uint16_png(path: Path, labels: np.ndarray, mpp: float) -> None:
    """Single-channel 16-bit PNG that records its pixel size (ids above 65535 cannot be written and raise)."""
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path.name}: ids above 65535 do not fit a 16-bit PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG", **png_resolution(mpp))


def open_npy(path: Path, shape, dtype) -> np.ndarray:
    """A ``.npy`` file of ``shape`` written in place through a memory map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
