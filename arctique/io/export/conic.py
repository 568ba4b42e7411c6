"""CoNIC: ``images.npy`` (N, 256, 256, 3) uint8, ``labels.npy`` (N, 256, 256, 2) uint16 (instance
ids, class in Lizard codes), ``counts.csv`` (nuclei per class with a pixel in the central 224 x 224
crop) and ``patch_info.csv``: one column, ``<cohort>_<image>-<patch>`` as in the release
(``arctique_12-0003``: tile 3 of sample 12), which the CoNIC baseline's split code (hover_net's
``generate_split.py``, torch_em) cuts at ``-`` to keep every tile of a field in one split.
``export.json`` gives each patch's sample and position. ``split.csv`` (columns train and test: patch
indices, the shorter column padded with empty cells) is the split that torch_em's CoNIC loader
reads when present: the reader's ``Dataset(split=..., fractions="train=0.8,test=0.2")`` of
seed 0, whole fields to one side."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..splits import assign_splits
from .base import Writer, open_npy, registry_codes
from .patches import Patch

# counts.csv columns, in Lizard code order 1..6
COUNT_COLUMNS = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
COUNT_MARGIN_PX = 16  # counts cover the central 224 x 224 px of a 256 px patch
COHORT = "arctique"  # the source-cohort part of a patch name (the release has consep, crag, dpath, ...)
SPLIT = {"train": 0.8, "test": 0.2}  # split.csv: the CoNIC baseline's proportions, by field


class Conic(Writer):
    name = "conic"
    codes = registry_codes("lizard")
    patch_px = 256
    native_mpp = 0.5
    feeds = "the CoNIC challenge baseline (TissueImageAnalytics/CoNIC, HoVer-Net) and its metrics"

    def __init__(self, out: Path, n_patches: int) -> None:
        super().__init__(out, n_patches)
        side = self.patch_px
        self.images = open_npy(out / "images.npy", (n_patches, side, side, 3), np.uint8)
        self.labels = open_npy(out / "labels.npy", (n_patches, side, side, 2), np.uint16)
        self.counts, self.info, self.samples = [], [], []

    def add(self, patch: Patch) -> None:
        k = len(self.info)
        codes = self.code_table()[patch.classes]
        self.images[k] = patch.image
        self.labels[k, ..., 0] = patch.instance
        self.labels[k, ..., 1] = codes[patch.instance]
        m = COUNT_MARGIN_PX
        centre = np.unique(patch.instance[m:-m, m:-m])
        counted = np.bincount(codes[centre[centre > 0]], minlength=len(COUNT_COLUMNS) + 1)[1:]
        self.counts.append(dict(zip(COUNT_COLUMNS, counted.tolist())))
        self.info.append({"patch_info": f"{COHORT}_{patch.index}-{patch.tile or 0:04d}"})
        self.samples.append(patch.index)

    def close(self) -> None:
        self.images.flush()
        self.labels.flush()
        for name, rows in (("counts.csv", self.counts), ("patch_info.csv", self.info)):
            with open(self.out / name, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(COUNT_COLUMNS),
                                        lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        side = assign_splits(sorted(set(self.samples)), SPLIT, 0)
        columns = {name: [k for k, i in enumerate(self.samples) if side[i] == name] for name in SPLIT}
        rows = max(map(len, columns.values()), default=0)
        with open(self.out / "split.csv", "w", newline="") as f:
            table = csv.writer(f, lineterminator="\n")
            table.writerow(list(columns))
            table.writerows([[c[r] if r < len(c) else "" for c in columns.values()] for r in range(rows)])
