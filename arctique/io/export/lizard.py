"""Lizard: ``images/<name>.png`` and ``labels/<name>.mat`` holding ``inst_map`` (int32), ``id``
(N, 1), ``class`` (N, 1; Lizard codes), ``bbox`` (N, 4: y1, y2, x1, x2, end-exclusive) and
``centroid`` (N, 2: x, y in pixels, the mean of the visible pixels)."""

from __future__ import annotations

import numpy as np

from .base import Writer, instance_boxes, registry_codes, write_rgb_png
from .patches import Patch


class Lizard(Writer):
    name = "lizard"
    codes = registry_codes("lizard")
    native_mpp = 0.5
    feeds = "Lizard loaders and the CoNIC/HoVer-Net data preparation that reads the .mat files"

    def add(self, patch: Patch) -> None:
        write_rgb_png(self.out / f"images/{patch.name}.png", patch.image, patch.mpp)
        try:
            from scipy.io import savemat
        except ImportError:
            raise SystemExit("arctique-export --format lizard writes MATLAB .mat files with scipy: "
                             "pip install scipy") from None
        ids = np.arange(1, patch.n + 1)
        bbox, rows_cols = instance_boxes(patch.instance, patch.n)
        path = self.out / f"labels/{patch.name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(path, {
            "inst_map": patch.instance.astype(np.int32),
            "id": ids.reshape(-1, 1).astype(np.int32),
            "class": self.code_table()[patch.classes[1:]].reshape(-1, 1).astype(np.int32),
            "bbox": bbox.astype(np.int32),
            "centroid": rows_cols[:, ::-1].astype(np.float64),
        }, do_compression=True)
