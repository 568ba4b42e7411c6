"""Reading a finished dataset, numpy only: ``arctique.Dataset(path)`` gives each complete sample's
image, every label map (nuclei, cytoplasm, tissue, the ambiguity maps and the per-pixel class
posterior), the 3D stack, the per-cell table and the class table, of the clean labels or of a
label-noise level and simulated annotator. The exports and the optional PyTorch adapter
(``arctique.io.torch_dataset``) are built on it."""

from __future__ import annotations

import copy
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

import numpy as np
import tifffile
from PIL import Image

from ..classes import CLASSES, CellClass
from . import dataset as ds
from .dataset import level_name
from .splits import assign_splits, parse_split


def _label_map(key: str, doc: str, noisy: bool = False) -> cached_property:
    """A ``Sample`` attribute that reads the TIFF map ``key`` once: the noise variant's when
    ``noisy`` and the dataset has one, else the clean map."""
    def read(sample: "Sample") -> np.ndarray:
        return sample._labels(key) if noisy else sample._clean(key)

    read.__doc__ = doc
    return cached_property(read)


class Sample:
    """One complete sample; each array is read from disk when first asked for."""

    def __init__(self, root: Path, index: int, noise: Optional[str] = None, annotator: Optional[int] = None) -> None:
        self.root, self.index, self.noise, self.annotator = root, index, noise, annotator
        self._files = ds.sample_files(index)
        self._noise_files = ds.noise_files(index, noise, annotator) if noise is not None else {}

    def _path(self, key: str) -> Path:
        return self.root / self._files[key]

    def _labels(self, key: str) -> np.ndarray:
        """The noise variant's map ``key`` where the dataset has one, else the clean map."""
        return tifffile.imread(self.root / self._noise_files.get(key, self._files[key]))

    def _clean(self, key: str) -> np.ndarray:
        return tifffile.imread(self._path(key))

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

    # The label maps, read when first asked for; those of the noise variant where it has one.
    instance = _label_map("instance", "(H, W) nucleus instance ids, 0 background", noisy=True)
    semantic = _label_map("semantic", "(H, W) uint8 class ids (``Dataset.class_table``)", noisy=True)
    foreground = _label_map("foreground", "(H, W) uint8 1 on nuclei", noisy=True)
    three_class = _label_map("three_class", "(H, W) uint8 0 background, 1 nucleus interior, 2 border", noisy=True)
    cytoplasm = _label_map("cytoplasm", "(H, W) clean instance ids of the cell bodies around the nuclei that have one")
    soft = _label_map("soft", "(H, W) float32 share of the pixel's area covered by a nucleus (partial volume)")
    soft_instances = _label_map("soft_instances", "(H, W) uint8 distinct nuclei seen within the pixel's area")
    overlap = _label_map("overlap", "(H, W) uint8 nuclei on the pixel-centre ray inside the section")
    defocus = _label_map("defocus", "(H, W) float32 depth of the visible nucleus from the focal plane, um; NaN off nuclei")

    @cached_property
    def noise_record(self) -> Optional[Dict[str, Any]]:
        """What the noise variant changed (flips, merges, splits, foreground moves), None when clean."""
        return json.loads((self.root / self._noise_files["record"]).read_text()) if self._noise_files else None

    @cached_property
    def class_posterior(self) -> np.ndarray:
        """(H, W, 1 + classes) float32 per pixel: the class posterior of its clean visible nucleus
        (the cells' ``class_posterior``, over the classes in id order), 1 on background (channel 0)."""
        clean = self._clean("instance") if self._noise_files else self.instance  # the clean map read once
        table = np.zeros((len(self.cells) + 1, len(CLASSES) + 1), np.float32)
        table[0, 0] = 1
        for row, cell in enumerate(self.cells, start=1):
            table[row, 1:] = cell["class_posterior"]
        return table[clean]

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
        noise: a label-noise level written into the dataset (e.g. 20): ``instance``, ``semantic``,
            ``foreground`` and ``three_class`` then come from that variant; every other map,
            ``cells`` and ``stack`` stay clean.
        annotator: with ``noise``, simulated annotator k of that level (``noise.annotators``).
        split: one part of a reproducible split of the samples, e.g. ``"train"``: the split that
            ``arctique-export --split FRACTIONS --split-seed SEED`` writes.
        fractions, split_seed: that split (default ``train=0.8,val=0.1,test=0.1``, seed 0).

    Indexing with a slice gives a Dataset of those samples, as indexing a list does.
    """

    def __init__(self, root: Path, noise: Optional[float] = None, annotator: Optional[int] = None,
                 split: Optional[str] = None, fractions: str = "train=0.8,val=0.1,test=0.1",
                 split_seed: int = 0) -> None:
        self.root = Path(root)
        if not (self.root / ds.MANIFEST).exists():
            raise ValueError(f"{self.root} has no {ds.MANIFEST}: not an arctique dataset (or nothing complete yet)")
        self.indices: Tuple[int, ...] = tuple(sorted(ds.Dataset(self.root).completed()))
        if annotator is not None and noise is None:
            raise ValueError("annotator: simulated annotators belong to a noise level; give noise= too")
        try:
            self.noise = level_name(float(noise)) if noise is not None else None
        except ValueError:
            raise ValueError(f"noise={noise!r} is not a noise level (a number such as 20); annotators: "
                             "noise=20, annotator=0") from None
        self.annotator = annotator
        if self.noise is not None:
            missing = [i for i in self.indices
                       if not (self.root / ds.noise_files(i, self.noise, annotator)["instance"]).exists()]
            if missing:
                levels = ", ".join(self.noise_levels()) or "none"
                what = f"noise level {self.noise}" + (f" annotator {annotator}" if annotator is not None else "")
                raise ValueError(f"{what} is missing for {len(missing)} sample(s) of {self.root} "
                                 f"(levels written: {levels})")
        if split is not None:
            parts = parse_split(fractions, "fractions")
            if split not in parts:
                raise ValueError(f"split={split!r} is not one of {', '.join(parts)} (fractions={fractions!r})")
            of = assign_splits(list(self.indices), parts, split_seed)
            self.indices = tuple(i for i in self.indices if of[i] == split)

    def noise_levels(self) -> List[str]:
        """The label-noise levels that have instance maps in this dataset (simulated annotators aside)."""
        prefix = "instance_noise_"
        names = (p.name[len(prefix):] for p in (self.root / "masks").glob(prefix + "*") if any(p.glob("*.tif")))
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

    @overload
    def __getitem__(self, position: int) -> Sample: ...

    @overload
    def __getitem__(self, position: slice) -> "Dataset": ...

    def __getitem__(self, position: Union[int, slice]) -> Union[Sample, "Dataset"]:
        if isinstance(position, slice):
            part = copy.copy(self)
            part.indices = self.indices[position]
            return part
        return Sample(self.root, self.indices[position], self.noise, self.annotator)

    def sample(self, index: int) -> Sample:
        """The sample of seed/index ``index``."""
        if index not in self.indices:
            raise KeyError(f"sample {index} is not complete in {self.root}")
        return Sample(self.root, index, self.noise, self.annotator)
