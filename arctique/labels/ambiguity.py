"""Ground truth for uncertainty: exact ambiguity maps of one sample, computed in numpy from the
crossings of vertical rays with the nucleus meshes (``labels.trace``), the same crossings the label
passes are read from, so the maps and the first-hit masks describe one geometry.

An interval of a ray inside a nucleus that meets the slab [z0, z1] means the ray passes through that
nucleus in the section, and the interval whose top (clipped to the slab) is highest is the first hit.

Maps (section-frame micrometres; the focal plane is ``focus_z``):

* ``soft``: share of each pixel's area, sampled on an n x n sub-pixel grid, whose first hit in the
  slab is a nucleus (partial volume);
* ``soft_instances``: how many distinct nuclei are first hits somewhere in the pixel's area;
* ``overlap``: how many distinct nuclei the pixel-centre ray passes through in the slab;
* ``defocus``: for pixels of the instance mask, the mid-depth of the visible nucleus's path through
  the slab minus ``focus_z`` (positive towards the camera); NaN on background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

from ..scene.model import SceneModel
from .trace import Crossings, Intervals, Mesh, crossings


def _first_hits(iv: Intervals) -> Tuple[np.ndarray, np.ndarray]:
    """Index into ``iv`` of the first hit of each ray that meets a nucleus (the highest top, the
    earliest of equal ones), and those rays."""
    if len(iv.ray) == 0:
        return np.zeros(0, np.int64), iv.ray
    starts = np.flatnonzero(np.r_[True, iv.ray[1:] != iv.ray[:-1]])
    highest = np.repeat(np.maximum.reduceat(iv.top, starts), np.diff(np.r_[starts, len(iv.ray)]))
    best = np.flatnonzero(iv.top == highest)
    first = best[np.r_[True, iv.ray[best[1:]] != iv.ray[best[:-1]]]]
    return first, iv.ray[first]


def _distinct_per(group: np.ndarray, row: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct ``row`` values in each group."""
    span = int(row.max(initial=0)) + 1
    return np.bincount(np.unique(group * span + row) // span, minlength=n_groups)


def _mid_depth(iv: Intervals, rays: np.ndarray, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For each (ray, nucleus row) asked: the mid-depth of that nucleus's topmost piece on that ray
    (NaN where there is none), and whether there is one."""
    if len(iv.ray) == 0:
        return np.full(len(rays), np.nan), np.zeros(len(rays), bool)
    n_rows = int(max(iv.row.max(), rows.max(initial=0))) + 1
    order = np.lexsort((-iv.top, iv.row, iv.ray))
    key = iv.ray[order] * n_rows + iv.row[order]
    head = np.r_[True, key[1:] != key[:-1]]
    key, order = key[head], order[head]
    at = np.clip(np.searchsorted(key, rays * n_rows + rows), 0, len(key) - 1)
    found = key[at] == rays * n_rows + rows
    return np.where(found, (iv.top + iv.bottom)[order[at]] / 2, np.nan), found


@dataclass(frozen=True)
class AmbiguityMaps:
    """The maps of one sample and the per-sample values written into its metadata."""

    soft: np.ndarray  # (H, W) float32 in [0, 1]
    soft_instances: np.ndarray  # (H, W) uint8
    overlap: np.ndarray  # (H, W) uint8
    defocus: np.ndarray  # (H, W) float32 um, NaN on background
    record: Dict[str, Any]  # per-sample values for the metadata

    def maps(self) -> Dict[str, np.ndarray]:
        """File key (``io.dataset.sample_files``) -> array."""
        return {"soft": self.soft, "soft_instances": self.soft_instances, "overlap": self.overlap,
                "defocus": self.defocus}


def ambiguity_maps(scene: SceneModel, mesh: Mesh, centre: Crossings, instance: np.ndarray,
                   instance_rows: np.ndarray, mpp: float, subsamples: int, focus_z: float) -> AmbiguityMaps:
    """The ambiguity maps of one sample (module docstring).

    Args:
        mesh: ``scene.cells.nucleus_mesh`` of the labels' level, traced again on the sub-pixel grid.
        centre: its crossings with the pixel-centre rays, from which ``instance`` was read.
        instance: the first-hit instance mask (ids 1..N).
        instance_rows: (N + 1,) scene cell row of each instance id (entry 0 unused).
        subsamples: sub-pixel rays per pixel side for ``soft`` and ``soft_instances``.

    The mask takes a ray's first crossing by the way its triangle faces, the intervals pair a
    nucleus's crossings in order; the two disagree only on degenerate rays (through a mesh vertex,
    or where meshes intersect). There ``overlap`` follows the mask (0 off it, at least 1 on it) and
    ``record["reconciled_px"]`` counts those pixels.
    """
    size = instance.shape[0]
    sec = scene.section
    slab = (sec.z0, sec.z1)

    fine = crossings(mesh, size, mpp, subsamples, slab).intervals(slab)
    first_idx, fine_first = _first_hits(fine)
    n = size * subsamples
    covered = np.zeros(n * n, bool)
    covered[fine_first] = True
    soft = covered.reshape(size, subsamples, size, subsamples).mean((1, 3)).astype(np.float32)
    fy, fx = np.divmod(fine.ray[first_idx], n)
    pixel = (fy // subsamples) * size + fx // subsamples
    soft_instances = _distinct_per(pixel, fine.row[first_idx], size * size).reshape(size, size)

    centre = centre.intervals(slab)
    traced = _distinct_per(centre.ray, centre.row, size * size).reshape(size, size)
    labelled = instance > 0
    overlap = np.where(labelled, np.maximum(traced, 1), 0)
    reconciled = int(np.count_nonzero(overlap != traced))

    # Defocus: the visible nucleus is the one the mask shows; its topmost piece on the pixel's ray.
    defocus = np.full(size * size, np.nan)
    pixels = np.flatnonzero(labelled.ravel())
    visible_row = instance_rows[instance.ravel()[pixels]]
    mid, found = _mid_depth(centre, pixels, visible_row)
    # A degenerate pixel without that piece takes its nucleus's centre depth, clipped to the slab.
    fallback = np.clip(scene.cells.centre[visible_row, 2], sec.z0, sec.z1)
    defocus[pixels] = np.where(found, mid, fallback) - focus_z
    return AmbiguityMaps(
        soft=soft, soft_instances=np.minimum(soft_instances, 255).astype(np.uint8),
        overlap=np.minimum(overlap, 255).astype(np.uint8), defocus=defocus.reshape(size, size).astype(np.float32),
        record={"subsamples": subsamples, "reconciled_px": reconciled,
                "defocus_fallback_px": int(np.count_nonzero(~found))})


def instance_rows(cells: List[Dict[str, Any]]) -> np.ndarray:
    """(N + 1,) scene cell row of each instance id of the per-cell table (scene cell ids are rows + 1)."""
    rows = np.zeros(len(cells) + 1, np.int64)
    rows[[c["id"] for c in cells]] = [c["scene_cell_id"] - 1 for c in cells]
    return rows


def cell_columns(cells: List[Dict[str, Any]], mixture: np.ndarray, instance_rows: np.ndarray, aperture: float,
                 mpp: float, instance: np.ndarray, defocus: np.ndarray, slab_to_focus: Tuple[float, float]
                 ) -> List[Dict[str, Any]]:
    """The per-cell table with two more columns: ``blur_radius_px``, the radius of the blur disc of
    what is seen of the nucleus (``optics.aperture`` x |d| / mpp, d the mean of the ``defocus`` map
    over its visible pixels; for a nucleus hidden everywhere, its centre's depth to focus clipped to
    the section, ``slab_to_focus``): the map and the table agree even for a nucleus whose centre
    lies outside the section. And ``class_posterior``, the nucleus's appearance mixture over the
    classes in id order (one-hot unless a class-morphing slider such as ``nuclei.lym_to_pla`` blends
    its look with another class: the class posterior of an observer who sees the appearance exactly)."""
    seen = instance > 0
    n = len(cells) + 1
    pixels = np.bincount(instance[seen], minlength=n)
    depth_sum = np.bincount(instance[seen], weights=defocus[seen].astype(np.float64), minlength=n)
    out = []
    for cell in cells:
        row, i = instance_rows[cell["id"]], cell["id"]
        depth = depth_sum[i] / pixels[i] if pixels[i] else float(np.clip(cell["depth_to_focus_um"], *slab_to_focus))
        out.append({**cell, "blur_radius_px": round(aperture * abs(depth) / mpp, 4),
                    "class_posterior": [round(float(w), 6) for w in mixture[row]]})
    return out

