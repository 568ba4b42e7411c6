"""What every export format shares: the writer interface, the class codes from the registry and the
file helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np
from PIL import Image

from ...classes import CLASSES
from .patches import Patch


def registry_codes(attribute: str, absent: Optional[int] = None) -> Dict[int, int]:
    """Our class id -> the format's code, read from the class registry (``arctique/classes.py``);
    classes whose code is ``absent`` are left out (their nuclei are not exported)."""
    return {c.id: getattr(c, attribute) for c in CLASSES if getattr(c, attribute) != absent}


class Writer:
    """One export format. ``add`` is called once per patch, then ``close``; ``n_patches`` is known
    up front so that array formats can write into a memory-mapped file."""

    name: str = ""
    codes: Dict[int, int] = {}  # our class id -> the format's class code; other classes are dropped
    patch_px: Optional[int] = None  # the format's fixed patch side, when it has one
    native_mpp: Optional[float] = None  # the pixel size of the public dataset (um), when it has one
    feeds: str = ""  # the public training code that reads it

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


def write_rgb_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def write_uint16_png(path: Path, labels: np.ndarray) -> None:
    """Single-channel 16-bit PNG (ids above 65535 cannot be written and raise)."""
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path.name}: ids above 65535 do not fit a 16-bit PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path, format="PNG")


def open_npy(path: Path, shape, dtype) -> np.ndarray:
    """A ``.npy`` file of ``shape`` written in place through a memory map."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
