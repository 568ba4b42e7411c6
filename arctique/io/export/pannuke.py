"""PanNuke, laid out as one published fold: ``images/<fold>/images.npy`` (N, 256, 256, 3),
``images/<fold>/types.npy`` (N,) tissue names and ``masks/<fold>/masks.npy`` (N, 256, 256, 6),
float64 as in the release. Mask channels 0 neoplastic, 1 inflammatory, 2 connective, 3 dead,
4 epithelial hold the instance ids of their nuclei; channel 5 is 1 on background. ``<fold>`` is
``fold<k>``, k the number ending the split's name (``--split fold1=0.34,fold2=0.33,fold3=0.33``),
else 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Writer, open_npy, registry_codes, split_number
from .patches import Patch

CHANNELS = ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial", "Background")
TISSUE = "Colon"  # PanNuke's tissue type name


class PanNuke(Writer):
    name = "pannuke"
    codes = registry_codes("pannuke")
    patch_px = 256
    native_mpp = 0.25
    feeds = "PanNuke loaders (CellViT, HoVer-Net's PanNuke preparation, torch_em)"

    def __init__(self, out: Path, n_patches: int) -> None:
        super().__init__(out, n_patches)
        side = self.patch_px
        fold = f"fold{split_number(out) or 1}"
        self.image_dir, mask_dir = out / "images" / fold, out / "masks" / fold
        self.images = open_npy(self.image_dir / "images.npy", (n_patches, side, side, 3), np.float64)
        self.masks = open_npy(mask_dir / "masks.npy", (n_patches, side, side, len(CHANNELS)), np.float64)
        self.added = 0

    def add(self, patch: Patch) -> None:
        k = self.added
        channel = self.code_table()[patch.classes][patch.instance]
        self.images[k] = patch.image
        for c in range(len(CHANNELS) - 1):
            self.masks[k, ..., c] = np.where((patch.instance > 0) & (channel == c), patch.instance, 0)
        self.masks[k, ..., -1] = patch.instance == 0
        self.added += 1

    def close(self) -> None:
        self.images.flush()
        self.masks.flush()
        np.save(self.image_dir / "types.npy", np.array([TISSUE] * self.n_patches))
