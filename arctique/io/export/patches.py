"""From a dataset's samples to export patches: classes a format lacks dropped, fields resampled to
the target pixel size, cut into tiles, and each patch's instances renumbered 1..n. numpy and Pillow.

Labels are resampled by nearest neighbour through pixel centres (an output pixel takes the label of
the input pixel containing its centre), so ids and classes stay exact; images by Pillow's Lanczos
filter, whose support widens with the reduction (anti-aliasing). An instance with no pixel left in
a patch is not in that patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..reader import Sample


@dataclass(frozen=True)
class Patch:
    """One exported image with its labels."""

    index: int  # the source sample
    tile: Optional[int]  # tile number k in the field, None for the whole field
    y: int  # top-left corner in the resampled field (px)
    x: int
    mpp: float  # um per pixel
    image: np.ndarray  # (h, w, 3) uint8
    instance: np.ndarray  # (h, w) int32 ids 1..n, 0 background
    classes: np.ndarray  # (n + 1,) our class id of each id (0 at index 0)

    @property
    def name(self) -> str:
        """File stem: "<index>" for a whole field, "<index>_<k:03d>" for tile k."""
        return str(self.index) if self.tile is None else f"{self.index}_{self.tile:03d}"

    @property
    def semantic(self) -> np.ndarray:
        return self.classes[self.instance]

    @property
    def n(self) -> int:
        return len(self.classes) - 1


def field_size(size: int, mpp: float, target_mpp: float) -> int:
    """Side in pixels of a field of ``size`` px at ``mpp`` resampled to ``target_mpp``."""
    return max(1, int(round(size * mpp / target_mpp)))


def tile_starts(size: int, tile: int) -> List[int]:
    """Tile origins along one axis: every ``tile`` px, the last one moved back to end at the edge."""
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def instance_classes(instance: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """(max id + 1,) class of each instance: the most frequent class of its pixels (one class for
    clean labels; falsely merged noisy instances take the majority, ties to the smaller id)."""
    n = int(instance.max(initial=0)) + 1
    k = int(semantic.max(initial=0)) + 1
    votes = np.bincount(instance.ravel().astype(np.int64) * k + semantic.ravel(), minlength=n * k)
    out = votes.reshape(n, k).argmax(1)
    out[0] = 0
    return out


def resample_labels(labels: np.ndarray, mpp: float, target_mpp: float, size: int) -> np.ndarray:
    """``labels`` resampled to ``size`` x ``size`` pixels of ``target_mpp``: the most frequent label
    among k x k points spread evenly over each new pixel (k = ceil(target_mpp / mpp); one point, the
    centre, when upsampling), ties to the larger label. Unlike the label at the centre alone, which
    at an even reduction falls on a source pixel's edge and takes the pixel beyond it (shifting
    every nucleus by a quarter of a new pixel), the vote is symmetric about the centre."""
    k = max(1, math.ceil(target_mpp / mpp - 1e-9))
    points = ((np.arange(size)[:, None] + (np.arange(k) + 0.5) / k) * target_mpp / mpp).ravel()
    src = np.minimum(points.astype(np.int64), labels.shape[0] - 1)
    votes = labels[np.ix_(src, src)].reshape(size, k, size, k).transpose(0, 2, 1, 3).reshape(size, size, k * k)
    if k == 1:
        return votes[..., 0]
    votes = votes.astype(np.int64)
    counts = np.stack([(votes == votes[..., j:j + 1]).sum(-1) for j in range(k * k)], -1)
    best = np.argmax(counts * (int(votes.max(initial=0)) + 1) + votes, axis=-1)
    return np.take_along_axis(votes, best[..., None], -1)[..., 0].astype(labels.dtype)


def smooth(image: np.ndarray, mpp: float, target_mpp: float, size: int) -> np.ndarray:
    """``image`` resampled to ``size`` x ``size`` pixels of ``target_mpp`` (Lanczos, anti-aliased)."""
    extent = min(size * target_mpp / mpp, image.shape[0])
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS,
                                                   box=(0, 0, extent, extent)))


def renumber(instance: np.ndarray, classes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Ids 1..n in the order of the old ids; the class table follows."""
    ids, inverse = np.unique(instance, return_inverse=True)
    if ids[0] != 0:
        ids, inverse = np.concatenate([[0], ids]), inverse + 1
    return inverse.reshape(instance.shape).astype(np.int32), classes[ids]


@dataclass(frozen=True)
class Field:
    """One sample's field at the target pixel size: nuclei of the kept classes only."""

    index: int
    mpp: float
    image: np.ndarray  # (S, S, 3) uint8
    instance: np.ndarray  # (S, S) the sample's ids
    classes: np.ndarray  # class of each id
    vanished: int  # kept nuclei that have no pixel left at this pixel size


def resampled_field(sample: Sample, kept_classes: Sequence[int], target_mpp: float) -> Field:
    """The sample at ``target_mpp`` (labels by ``resample_labels``, the image by ``smooth``), once
    for all its tiles, with the count of nuclei that vanish."""
    instance, semantic = sample.instance.astype(np.int64), sample.semantic
    classes = instance_classes(instance, semantic)
    instance = np.where(np.isin(classes, kept_classes)[instance], instance, 0)
    before = len(np.unique(instance))
    size = field_size(instance.shape[0], sample.mpp, target_mpp)
    if target_mpp != sample.mpp:
        instance = resample_labels(instance, sample.mpp, target_mpp, size)
        image = smooth(sample.image, sample.mpp, target_mpp, size)
    else:
        image = sample.image
    return Field(sample.index, target_mpp, image, instance, classes, before - len(np.unique(instance)))


def field_patches(field: Field, tile: Optional[int]) -> Iterator[Patch]:
    """The patches of one field: the whole of it, or ``tile`` px tiles."""
    image, instance, classes, size = field.image, field.instance, field.classes, field.instance.shape[0]
    tiled = tile is not None
    starts = tile_starts(size, tile) if tiled else [0]
    side = tile if tiled else size
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        ids, table = renumber(instance[y:y + side, x:x + side], classes)
        yield Patch(field.index, k if tiled else None, y, x, field.mpp,
                    np.ascontiguousarray(image[y:y + side, x:x + side]), ids, table)
