"""Writer of one rendered sample: its image, label maps, 3D stack, scene model and records, into the
sample's staging folder under the names of ``dataset.sample_files``. numpy only (no bpy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from ..labels.exact import Labels
from ..scene import SceneModel, save
from . import dataset as ds
from .preview import preview


@dataclass(frozen=True)
class RenderedSample:
    """Everything the render and label stages made for one seed."""

    seed: int
    mpp: float  # um per pixel, written into every label TIFF
    image: np.ndarray  # (H, W, 3) uint8 sRGB
    labels: Labels  # instance, semantic, cytoplasm, stack and the per-cell table
    tissue: np.ndarray  # (H, W) uint8 tissue compartment codes
    scene: SceneModel
    metadata: Dict[str, Any]  # per-sample values, software versions and the per-cell table
    parameters: Dict[str, Any]  # the fully resolved configuration, seed included
    more_maps: Mapping[str, np.ndarray] = field(default_factory=dict)  # further 2D maps (ambiguity), by key

    def label_maps(self) -> Dict[str, np.ndarray]:
        """The 2D label maps, by their key in ``dataset.sample_files``."""
        return {"instance": self.labels.instance, "semantic": self.labels.semantic,
                "cytoplasm": self.labels.cytoplasm, "tissue": self.tissue, **self.more_maps}


def write_sample(folder: Path, sample: RenderedSample, with_preview: bool) -> None:
    """Write ``sample`` into ``folder`` (a staging folder: the dataset commits it afterwards)."""
    seed, mpp = sample.seed, sample.mpp
    files = ds.sample_files(seed)
    ds.write_png(folder / files["image"], sample.image, mpp)
    for key, plane in sample.label_maps().items():
        ds.write_label_tiff(folder / files[key], plane, mpp)
    ds.write_array(folder / files["stack"], sample.labels.stack)
    for k, plane in enumerate(sample.labels.stack):
        ds.write_label_tiff(folder / ds.slice_file(seed, k), plane, mpp)
    (folder / files["scene"]).parent.mkdir(parents=True, exist_ok=True)
    save(sample.scene, folder / files["scene"])
    ds.write_text(folder / files["metadata"], ds.to_json(sample.metadata))
    ds.write_cells_csv(folder / files["cells_csv"], sample.labels.cells)
    ds.write_text(folder / files["parameters"], ds.to_json(sample.parameters))
    if with_preview:
        ds.write_png(folder / files["preview"], preview(sample.image, sample.labels.instance,
                                                        sample.labels.semantic), mpp)

