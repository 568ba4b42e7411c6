"""The layout of the reference's released v3 data: ``images/img_<name>.png`` (RGB) and
``masks/semantic/<name>.png``, ``masks/instance/<name>.png`` (16-bit PNG; classes 1 epithelial,
2 plasma, 3 lymphocyte, 4 eosinophil, 5 fibroblast; it has no neutrophils, which are left out)."""

from __future__ import annotations

from .base import Writer, registry_codes, write_rgb_png, write_uint16_png
from .patches import Patch


class ArctiqueV3(Writer):
    name = "arctique-v3"
    codes = registry_codes("reference", absent=0)
    feeds = "loaders of the reference's v3 release (e.g. Bio-Image-Datasets' ArctiqueDataset)"

    def add(self, patch: Patch) -> None:
        write_rgb_png(self.out / f"images/img_{patch.name}.png", patch.image, patch.mpp)
        write_uint16_png(self.out / f"masks/semantic/{patch.name}.png", self.code_table()[patch.semantic], patch.mpp)
        write_uint16_png(self.out / f"masks/instance/{patch.name}.png", patch.instance, patch.mpp)
