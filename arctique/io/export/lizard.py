"""Lizard, laid out as the release: ``lizard_images1/Lizard_Images1/<name>.png``,
``lizard_labels/Lizard_Labels/Labels/<name>.mat`` holding ``inst_map`` (int32), ``id`` (N, 1),
``class`` (N, 1; Lizard codes), ``bbox`` (N, 4: y1, y2, x1, x2, end-exclusive) and ``centroid``
(N, 2: x, y in pixels, the mean of the visible pixels), and ``lizard_labels/Lizard_Labels/info.csv``
(Filename, Source, Split). ``<name>`` is ``arctique_<sample>`` (``_<tile>`` with ``--tile``); Split
is the number ending the split's name (``--split fold1=...``), else 1."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import Writer, instance_boxes, registry_codes, split_number, write_rgb_png
from .patches import Patch


SOURCE = "arctique"  # the Source column and file-name prefix (the release has consep, crag, dpath, glas, pannuke)


class Lizard(Writer):
    name = "lizard"
    codes = registry_codes("lizard")
    native_mpp = 0.5
    feeds = "Lizard loaders and the CoNIC/HoVer-Net data preparation that reads the .mat files"

    def __init__(self, out: Path, n_patches: int) -> None:
        super().__init__(out, n_patches)
        try:
            from scipy.io import savemat
        except ImportError:
            raise SystemExit("arctique-export --format lizard writes MATLAB .mat files with scipy: "
                             "pip install scipy") from None
        self.savemat = savemat
        self.split = split_number(out) or 1
        self.labels = out / "lizard_labels" / "Lizard_Labels"
        self.info: list = []

    def add(self, patch: Patch) -> None:
        name = f"{SOURCE}_{patch.name}"
        self.info.append({"Filename": name, "Source": SOURCE, "Split": self.split})
        write_rgb_png(self.out / f"lizard_images1/Lizard_Images1/{name}.png", patch.image, patch.mpp)
        ids = np.arange(1, patch.n + 1)
        bbox, rows_cols = instance_boxes(patch.instance, patch.n)
        path = self.labels / f"Labels/{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.savemat(path, {
            "inst_map": patch.instance.astype(np.int32),
            "id": ids.reshape(-1, 1).astype(np.int32),
            "class": self.code_table()[patch.classes[1:]].reshape(-1, 1).astype(np.int32),
            "bbox": bbox.astype(np.int32),
            "centroid": rows_cols[:, ::-1].astype(np.float64),
        }, do_compression=True)

    def close(self) -> None:
        self.labels.mkdir(parents=True, exist_ok=True)
        with open(self.labels / "info.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["Filename", "Source", "Split"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.info)
