"""COCO instance segmentation: ``images/<name>.png`` and ``annotations.json`` with one annotation
per nucleus (uncompressed RLE mask, column-major runs starting with background; bbox [x, y, w, h];
area in pixels) and our classes as categories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ...classes import CLASSES
from .base import Writer, instance_boxes, write_rgb_png
from .patches import Patch


def rle(mask: np.ndarray) -> Dict[str, Any]:
    """COCO uncompressed RLE of a binary mask (runs of the column-major pixels, zeros first)."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = runs.tolist() if flat[0] == 0 else [0, *runs.tolist()]
    return {"size": list(mask.shape), "counts": counts}


class Coco(Writer):
    name = "coco"
    codes = {c.id: c.id for c in CLASSES}
    feeds = "detectron2, MMDetection and torchvision Mask R-CNN through pycocotools"

    def __init__(self, out: Path, n_patches: int) -> None:
        super().__init__(out, n_patches)
        self.images: List[Dict[str, Any]] = []
        self.annotations: List[Dict[str, Any]] = []

    def add(self, patch: Patch) -> None:
        file_name = f"images/{patch.name}.png"
        write_rgb_png(self.out / file_name, patch.image, patch.mpp)
        image_id = len(self.images) + 1
        h, w = patch.instance.shape
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w,
                            "sample": patch.index, "y_px": patch.y, "x_px": patch.x, "mpp_um": patch.mpp})
        boxes, _ = instance_boxes(patch.instance, patch.n)
        for i, (y0, y1, x0, x1) in enumerate(boxes.tolist(), start=1):
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = patch.instance[y0:y1, x0:x1] == i
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id,
                "category_id": int(self.codes[int(patch.classes[i])]), "segmentation": rle(mask),
                "area": int(mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})

    def close(self) -> None:
        categories = [{"id": c.id, "name": c.name, "supercategory": "nucleus", "long_name": c.long_name}
                      for c in CLASSES]
        (self.out / "annotations.json").write_text(json.dumps(
            {"images": self.images, "annotations": self.annotations, "categories": categories}))
