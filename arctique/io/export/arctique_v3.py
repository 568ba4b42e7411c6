"""The layout of the reference's released v3 data: ``images/img_<n>.png`` (RGB) and
``masks/semantic/<n>.png``, ``masks/instance/<n>.png`` (16-bit PNG; classes 1 epithelial,
2 plasma, 3 lymphocyte, 4 eosinophil, 5 fibroblast; it has no neutrophils, which are left out).

``n`` is an integer, as the reference lab's loaders read it (the last ``_``-separated token of
the file name): the sample index, or with ``--tile`` the index followed by the three-digit tile
number (sample 12, tile 3: ``12003``), so that every tile has its own number."""

from __future__ import annotations

from .base import Writer, registry_codes, write_rgb_png, write_uint16_png
from .patches import Patch


class ArctiqueV3(Writer):
    name = "arctique-v3"
    codes = registry_codes("reference", absent=0)
    feeds = "loaders of the reference's v3 release (e.g. Bio-Image-Datasets' ArctiqueDataset)"
    max_tiles_per_field = 1000  # three digits of tile number

    def add(self, patch: Patch) -> None:
        n = patch.name if patch.tile is None else f"{patch.index}{patch.tile:03d}"  # tile 3 of 12: "12003"
        write_rgb_png(self.out / f"images/img_{n}.png", patch.image, patch.mpp)
        write_uint16_png(self.out / f"masks/semantic/{n}.png", self.code_table()[patch.semantic], patch.mpp)
        write_uint16_png(self.out / f"masks/instance/{n}.png", patch.instance, patch.mpp)
