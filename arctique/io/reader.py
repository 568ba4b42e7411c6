"""Reading a finished dataset, numpy only: ``arctique.Dataset(path)`` gives each complete sample's
image, label maps, 3D stack and per-cell table, and the class table. The exports and the optional
PyTorch adapter (``arctique.io.torch_dataset``) are built on it."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tifffile
from PIL import Image

from ..classes import CLASSES, CellClass
from . import dataset as ds
from .dataset import level_name


class Sample:
    """One complete sample; each array is read from disk when first asked for."""

    def __init__(self, root: Path, index: int, noise: Optional[str] = None) -> None:
        self.root, self.index, self.noise = root, index, noise
        self._files = ds.sample_files(index)
        self._noise_files = ds.noise_files(index, noise) if noise is not None else {}

    def _path(self, key: str) -> Path:
        return self.root / self._files[key]

    def _labels(self, key: str) -> np.ndarray:
        return tifffile.imread(self.root / self._noise_files.get(key, self._files[key]))

    @cached_property
    def metadata(self) -> Dict[str, Any]:
        """``metadata/<i>.json``: per-sample values (``sample``), software versions and ``cells``."""
        return json.loads(self._path("metadata").read_text())

    @property
    def mpp(self) -> float:
        """Pixel size in um."""
        return float(self.metadata["sample"]["mpp_um"])

    @property
    def cells(self) -> List[Dict[str, Any]]:
        """Per-cell table of the clean instances, one row per id 1..N in id order."""
        return self.metadata["cells"]

    @cached_property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 sRGB."""
        return np.asarray(Image.open(self._path("image")).convert("RGB"))

    @cached_property
    def instance(self) -> np.ndarray:
        """(H, W) nucleus instance ids, 0 background (the noise variant's when the dataset has one)."""
        return self._labels("instance")

    @cached_property
    def semantic(self) -> np.ndarray:
        """(H, W) uint8 class ids (``Dataset.class_table``)."""
        return self._labels("semantic")

    @cached_property
    def tissue(self) -> Optional[np.ndarray]:
        """(H, W) uint8 tissue compartment codes, None for datasets written without them."""
        path = self._path("tissue")
        return tifffile.imread(path) if path.exists() else None

    @cached_property
    def stack(self) -> np.ndarray:
        """(Z, H, W) clean instance ids of the nucleus at each voxel centre, slice 0 at the camera."""
        return np.load(self._path("stack"))


class Dataset(Sequence[Sample]):
    """The complete samples of a dataset folder, in index order.

    Args:
        root: an ``arctique-gen`` output folder.
        noise: a label-noise level written into the dataset (e.g. 20): ``instance`` and
            ``semantic`` then come from that variant; ``cells`` and ``stack`` stay clean.
    """

    def __init__(self, root: Path, noise: Optional[float] = None) -> None:
        self.root = Path(root)
        if not (self.root / ds.MANIFEST).exists():
            raise ValueError(f"{self.root} has no {ds.MANIFEST}: not an arctique dataset (or nothing complete yet)")
        self.indices: Tuple[int, ...] = tuple(sorted(ds.Dataset(self.root).completed()))
        self.noise = level_name(noise) if noise is not None else None
        if self.noise is not None:
            missing = [i for i in self.indices
                       if not (self.root / ds.noise_files(i, self.noise)["instance"]).exists()]
            if missing:
                levels = ", ".join(self.noise_levels()) or "none"
                raise ValueError(f"noise level {self.noise} is missing for {len(missing)} sample(s) of "
                                 f"{self.root} (levels written: {levels})")

    def noise_levels(self) -> List[str]:
        """The label-noise levels that have instance maps in this dataset (simulated annotators aside)."""
        prefix = "instance_noise_"
        names = (p.name[len(prefix):] for p in (self.root / "masks").glob(prefix + "*"))
        return sorted((n for n in names if "_annotator_" not in n), key=float)

    @property
    def classes(self) -> Tuple[CellClass, ...]:
        """The class registry: ids, names and the codes of the public datasets."""
        return CLASSES

    @property
    def class_table(self) -> Dict[int, str]:
        """Semantic mask values and their class names (0 background)."""
        return {0: "background", **{c.id: c.name for c in CLASSES}}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Sample:  # type: ignore[override]
        return Sample(self.root, self.indices[position], self.noise)

    def sample(self, index: int) -> Sample:
        """The sample of seed/index ``index``."""
        if index not in self.indices:
            raise KeyError(f"sample {index} is not complete in {self.root}")
        return Sample(self.root, index, self.noise)
