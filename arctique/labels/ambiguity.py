"""Ground truth for uncertainty: exact ambiguity maps of one sample, computed in numpy from the same
nucleus meshes that Blender renders the labels from (so the maps and the first-hit masks describe one
geometry).

The camera is orthographic and looks down -z, so every pixel ray is vertical: a ray meets a mesh
triangle where its (x, y) lies inside the triangle's projection, at the z of the plane there. The
crossings of a ray with one nucleus, sorted top-down, pair into the intervals the ray spends inside
it; an interval that meets the slab [z0, z1] means the ray passes through that nucleus in the
section, and the interval whose top (clipped to the slab) is highest is the first hit.

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

Mesh = Tuple[np.ndarray, np.ndarray, np.ndarray]  # vertices, faces, cell row of each face
_CANDIDATES_PER_CHUNK = 4_000_000  # (triangle, grid point) pairs tested at once; bounds the memory


@dataclass(frozen=True)
class Intervals:
    """Where the rays of a grid are inside nuclei within the slab: one row per (ray, nucleus, piece)."""

    ray: np.ndarray  # (K,) ray index, row-major over the grid, top row first
    row: np.ndarray  # (K,) scene cell row of the nucleus
    top: np.ndarray  # (K,) upper end, clipped to the slab top
    bottom: np.ndarray  # (K,) lower end, clipped to the slab bottom


def _grid_coordinates(xy: np.ndarray, size: int, mpp: float, factor: int) -> np.ndarray:
    """Section-frame (x, y) -> continuous (column, row) of a grid of ``factor`` rays per pixel side,
    in which ray (i, j) sits at the integers: ray j of pixel column c is at x = (c + (j + 0.5) /
    factor - size / 2) * mpp; rows run top (largest y) first."""
    col = (xy[..., 0] / mpp + size / 2) * factor - 0.5
    row = (size / 2 - xy[..., 1] / mpp) * factor - 0.5
    return np.stack([col, row], -1)


def _includes_edge(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Tie rule for a ray exactly on an edge: of the two directions an edge is walked in, exactly one
    claims it, so a ray on an edge shared by two triangles crosses the surface once."""
    return (dy > 0) | ((dy == 0) & (dx < 0))


def _crossings(verts: np.ndarray, faces: np.ndarray, rows: np.ndarray, n: int, size: int, mpp: float,
               factor: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ray, cell row, z) of every crossing of an n x n grid of vertical rays with the triangles."""
    g = _grid_coordinates(verts[:, :2], size, mpp, factor)[faces]  # (F, 3, 2)
    z = verts[faces, 2]
    area = ((g[:, 1, 0] - g[:, 0, 0]) * (g[:, 2, 1] - g[:, 0, 1])
            - (g[:, 2, 0] - g[:, 0, 0]) * (g[:, 1, 1] - g[:, 0, 1]))
    flip = area < 0  # orient every projected triangle the same way
    g[flip] = g[flip][:, [0, 2, 1]]
    z[flip] = z[flip][:, [0, 2, 1]]
    area = np.abs(area)
    lo = np.clip(np.ceil(g.min(1)), 0, n).astype(np.int64)
    hi = np.clip(np.floor(g.max(1)), -1, n - 1).astype(np.int64)
    extent = np.maximum(hi - lo + 1, 0)
    count = np.where(area > 0, extent[:, 0] * extent[:, 1], 0)
    keep = np.nonzero(count)[0]
    out: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    total = np.cumsum(count[keep])
    cuts = np.searchsorted(total, np.arange(1, total[-1] // _CANDIDATES_PER_CHUNK + 1) * _CANDIDATES_PER_CHUNK
                           ) if len(keep) else []
    for tri in np.split(keep, cuts):
        if len(tri) == 0:
            continue
        per = count[tri]
        t = np.repeat(tri, per)
        k = np.arange(len(t)) - np.repeat(np.cumsum(per) - per, per)
        width = extent[t, 0]
        px = lo[t, 0] + k % width
        py = lo[t, 1] + k // width
        inside = np.ones(len(t), bool)
        weight = np.zeros(len(t))
        # Edge a -> b, opposite vertex c: its edge function is c's barycentric weight times the area.
        for a, b, c in ((1, 2, 0), (2, 0, 1), (0, 1, 2)):
            ax, ay = g[t, a, 0], g[t, a, 1]
            dx, dy = g[t, b, 0] - ax, g[t, b, 1] - ay
            e = dx * (py - ay) - dy * (px - ax)
            inside &= (e > 0) | ((e == 0) & _includes_edge(dx, dy))
            weight += e * z[t, c]
        t, px, py, weight = t[inside], px[inside], py[inside], weight[inside]
        out.append((py * n + px, rows[t], weight / area[t]))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    ray, row, zz = (np.concatenate(parts) for parts in zip(*out))
    return ray, row.astype(np.int64), zz


def slab_intervals(mesh: Mesh, size: int, mpp: float, factor: int, slab: Tuple[float, float]) -> Intervals:
    """The pieces of every ray of a (size * factor)^2 grid that lie inside a nucleus and the slab.

    Only nuclei whose mesh meets the slab are traced. A (ray, nucleus) pair with an odd number of
    crossings (a ray through a mesh vertex) is dropped rather than guessed.
    """
    verts, faces, rows = mesh
    z0, z1 = slab
    fz = verts[faces, 2]
    n_rows = int(rows.max(initial=-1)) + 1
    low = np.full(n_rows, np.inf)
    high = np.full(n_rows, -np.inf)
    np.minimum.at(low, rows, fz.min(1))
    np.maximum.at(high, rows, fz.max(1))
    traced = ((high > z0) & (low < z1))[rows]
    n = size * factor
    ray, row, z = _crossings(verts, faces[traced], rows[traced], n, size, mpp, factor)
    order = np.lexsort((-z, row, ray))
    ray, row, z = ray[order], row[order], z[order]
    key = ray * max(n_rows, 1) + row
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    even = np.repeat(sizes % 2 == 0, sizes)
    ray, row, z = ray[even], row[even], z[even]
    top, bottom = np.minimum(z[0::2], z1), np.maximum(z[1::2], z0)
    meets = top > bottom
    return Intervals(ray=ray[0::2][meets], row=row[0::2][meets], top=top[meets], bottom=bottom[meets])


def _first_hits(iv: Intervals) -> Tuple[np.ndarray, np.ndarray]:
    """Index into ``iv`` of the first hit of each ray that meets a nucleus, and those rays."""
    order = np.lexsort((-iv.top, iv.ray))
    first = order[np.r_[True, iv.ray[order][1:] != iv.ray[order][:-1]]] if len(order) else order
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


def ambiguity_maps(scene: SceneModel, mesh: Mesh, instance: np.ndarray, instance_rows: np.ndarray,
                   mpp: float, subsamples: int, focus_z: float) -> AmbiguityMaps:
    """The ambiguity maps of one sample (module docstring).

    Args:
        mesh: ``scene.cells.nucleus_mesh`` of the rendered level (the meshes of the label passes).
        instance: the rendered first-hit instance mask (ids 1..N).
        instance_rows: (N + 1,) scene cell row of each instance id (entry 0 unused).
        subsamples: sub-pixel rays per pixel side for ``soft`` and ``soft_instances``.

    The pixel-centre rays are traced in float64 and the rendered mask in Blender's float32, so along
    a nucleus outline a ray may graze one and not the other; there ``overlap`` follows the mask
    (0 off it, at least 1 on it) and ``record["reconciled_px"]`` counts those pixels.
    """
    size = instance.shape[0]
    sec = scene.section
    slab = (sec.z0, sec.z1)

    fine = slab_intervals(mesh, size, mpp, subsamples, slab)
    first_idx, fine_first = _first_hits(fine)
    n = size * subsamples
    covered = np.zeros(n * n, bool)
    covered[fine_first] = True
    soft = covered.reshape(size, subsamples, size, subsamples).mean((1, 3)).astype(np.float32)
    fy, fx = np.divmod(fine.ray[first_idx], n)
    pixel = (fy // subsamples) * size + fx // subsamples
    soft_instances = _distinct_per(pixel, fine.row[first_idx], size * size).reshape(size, size)

    centre = slab_intervals(mesh, size, mpp, 1, slab)
    traced = _distinct_per(centre.ray, centre.row, size * size).reshape(size, size)
    labelled = instance > 0
    overlap = np.where(labelled, np.maximum(traced, 1), 0)
    reconciled = int(np.count_nonzero(overlap != traced))

    # Defocus: the visible nucleus is the one the mask shows; its topmost piece on the pixel's ray.
    defocus = np.full(size * size, np.nan)
    pixels = np.flatnonzero(labelled.ravel())
    visible_row = instance_rows[instance.ravel()[pixels]]
    mid, found = _mid_depth(centre, pixels, visible_row)
    # A grazing pixel the trace misses takes its nucleus's centre depth, clipped to the slab.
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
                 mpp: float) -> List[Dict[str, Any]]:
    """The per-cell table with two more columns: ``blur_radius_px``, the radius of the blur disc of a
    point at the nucleus centre (``optics.aperture`` x |depth to focus| / mpp), and
    ``class_posterior``, the nucleus's appearance mixture over the classes in id order (one-hot
    unless a class-morphing slider such as ``nuclei.lym_to_pla`` blends its look with another class:
    the class posterior of an observer who sees the appearance exactly)."""
    out = []
    for cell in cells:
        row = instance_rows[cell["id"]]
        out.append({**cell, "blur_radius_px": round(aperture * abs(cell["depth_to_focus_um"]) / mpp, 4),
                    "class_posterior": [round(float(w), 6) for w in mixture[row]]})
    return out

