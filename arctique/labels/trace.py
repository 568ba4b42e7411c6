"""Vertical rays through closed triangle meshes, in numpy: the label passes and the ambiguity maps
are read from the same crossings.

The camera is orthographic and looks down -z, so every pixel ray is vertical: a ray meets a mesh
triangle where its (x, y) lies inside the triangle's projection, at the z of the plane there. A
crossing is a back face where the triangle's outward normal points down: the ray leaves the mesh
there, so it was inside just above. The crossings of a ray with one nucleus, sorted top-down, pair
into the intervals the ray spends inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

Mesh = Tuple[np.ndarray, np.ndarray, np.ndarray]  # vertices, faces, cell row of each face
_CANDIDATES_PER_CHUNK = 1_000_000  # (triangle, grid point) pairs tested at once; bounds the memory


def _min3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Elementwise minimum of three arrays (numpy's reduction over a length-3 axis is slow)."""
    return np.minimum(np.minimum(a, b), c)


def _max3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a, b), c)


def z_range(mesh: Mesh, n_rows: int) -> np.ndarray:
    """Lowest and highest z of the mesh of every cell row, (n_rows, 2) (+-inf for rows without one)."""
    verts, faces, rows = mesh
    z = [verts[faces[:, i], 2] for i in range(3)]
    out = np.stack([np.full(n_rows, np.inf), np.full(n_rows, -np.inf)], 1)
    if len(rows):
        # Faces come in runs of one row (a shell each): each run is reduced at once, then the few runs
        # of each row (ufunc.at over every face takes ten times as long).
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        np.minimum.at(out[:, 0], rows[starts], np.minimum.reduceat(_min3(*z), starts))
        np.maximum.at(out[:, 1], rows[starts], np.maximum.reduceat(_max3(*z), starts))
    return out


@dataclass(frozen=True)
class Intervals:
    """Where the rays of a grid are inside nuclei within the slab: one row per (ray, nucleus, piece),
    sorted by ray."""

    ray: np.ndarray  # (K,) ray index, row-major over the grid, top row first
    row: np.ndarray  # (K,) scene cell row of the nucleus
    top: np.ndarray  # (K,) upper end, clipped to the slab top
    bottom: np.ndarray  # (K,) lower end, clipped to the slab bottom


@dataclass(frozen=True)
class Crossings:
    """Every crossing of the rays of an n x n grid with mesh triangles, in no particular order."""

    n: int  # rays per grid side
    ray: np.ndarray  # (K,) ray index, row-major over the grid, top row first
    row: np.ndarray  # (K,) cell row of the mesh
    z: np.ndarray  # (K,) height of the crossing
    back: np.ndarray  # (K,) the ray leaves the mesh here

    def top_down(self) -> "Crossings":
        """The same crossings sorted by ray, then from the camera down."""
        order = np.lexsort((-self.z, self.ray))
        return Crossings(self.n, self.ray[order], self.row[order], self.z[order], self.back[order])

    def first_below(self, top: float, floor: float, ids: np.ndarray) -> np.ndarray:
        """(n, n) the surface each ray meets first at or below ``top``: ``ids[row]`` if that crossing
        is a back face (the ray started inside the mesh) or lies above ``floor``, else 0. Needs
        ``top_down`` order."""
        below = np.flatnonzero(self.z <= top)
        first = below[np.r_[True, self.ray[below[1:]] != self.ray[below[:-1]]]] if len(below) else below
        out = np.zeros(self.n * self.n, ids.dtype)
        out[self.ray[first]] = np.where(self.back[first] | (self.z[first] > floor), ids[self.row[first]], 0)
        return out.reshape(self.n, self.n)

    def intervals(self, slab: Tuple[float, float]) -> Intervals:
        """The pieces of the rays that lie inside a mesh and the slab.

        A (ray, mesh) pair with an odd number of crossings (a ray through a mesh vertex) is dropped
        rather than guessed.
        """
        z0, z1 = slab
        key = self.ray * (int(self.row.max(initial=0)) + 1) + self.row
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        sizes = np.diff(np.r_[starts, len(key)])
        # Top-down within each (ray, mesh): a pair needs at most a swap; longer runs (a ray through
        # several lobes of one nucleus) are few and sorted as such. Equal heights keep their order.
        pair = starts[sizes == 2]
        swap = pair[self.z[order[pair]] < self.z[order[pair + 1]]]
        order[swap], order[swap + 1] = order[swap + 1], order[swap]
        longer = np.flatnonzero(np.repeat(sizes > 2, sizes))
        order[longer] = order[longer][np.lexsort((-self.z[order[longer]], key[longer]))]
        ray, row, z = self.ray[order], self.row[order], self.z[order]
        even = np.repeat(sizes % 2 == 0, sizes)
        ray, row, z = ray[even], row[even], z[even]
        top, bottom = np.minimum(z[0::2], z1), np.maximum(z[1::2], z0)
        meets = top > bottom
        return Intervals(ray=ray[0::2][meets], row=row[0::2][meets], top=top[meets], bottom=bottom[meets])


def _grid_coordinates(xy: np.ndarray, size: int, mpp: float, factor: int) -> np.ndarray:
    """Section-frame (x, y) -> continuous (column, row) of a grid of ``factor`` rays per pixel side,
    in which ray (i, j) sits at the integers: ray j of pixel column c is at x = (c + (j + 0.5) /
    factor - size / 2) * mpp; rows run top (largest y) first."""
    col = (xy[..., 0] / mpp + size / 2) * factor - 0.5
    row = (size / 2 - xy[..., 1] / mpp) * factor - 0.5
    return np.stack([col, row], -1)


# The largest float below zero: ``e > _BELOW_ZERO`` is ``e >= 0`` for every float, -0.0 included.
_BELOW_ZERO = -np.nextafter(0.0, 1.0)


def _edge_floor(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Tie rule for a ray exactly on an edge: of the two directions an edge is walked in, exactly one
    claims it, so a ray on an edge shared by two triangles crosses the surface once. A ray is inside
    an edge where its edge function exceeds this floor: ``e >= 0`` on a claimed edge, ``e > 0``
    on the other."""
    return np.where((dy > 0) | ((dy == 0) & (dx < 0)), _BELOW_ZERO, 0.0)


def crossings(mesh: Mesh, size: int, mpp: float, factor: int, z_span: Tuple[float, float]) -> Crossings:
    """The crossings of a (size * factor)^2 grid of vertical rays over the field with the meshes
    whose z extent overlaps the open interval ``z_span`` (the others cannot matter to the caller).

    Triangles are tested against the grid points of their bounding box, in batches of equal box
    shape, so that each batch is one dense (triangles, rows, columns) array.
    """
    verts, faces, rows = mesh
    n = size * factor
    extent = z_range(mesh, int(rows.max(initial=-1)) + 1)
    traced = ((extent[:, 1] > z_span[0]) & (extent[:, 0] < z_span[1]))[rows]
    faces, rows = faces[traced], rows[traced]
    grid = _grid_coordinates(verts[:, :2], size, mpp, factor)
    x, y, z = ([values[faces[:, i]] for i in range(3)] for values in (grid[:, 0], grid[:, 1], verts[:, 2]))
    area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    # Grid rows run against y, so a positive area here is a triangle whose normal points down.
    back = area > 0
    flip = area < 0  # orient every projected triangle the same way
    for corner in (x, y, z):
        corner[1], corner[2] = np.where(flip, corner[2], corner[1]), np.where(flip, corner[1], corner[2])
    area = np.abs(area)
    lo = [np.clip(np.ceil(_min3(*c)), 0, n).astype(np.int64) for c in (x, y)]
    hi = [np.clip(np.floor(_max3(*c)), -1, n - 1).astype(np.int64) for c in (x, y)]
    width, height = (np.maximum(h - l + 1, 0) for l, h in zip(lo, hi))
    keep = np.flatnonzero((area > 0) & (width > 0) & (height > 0))
    shape = width[keep] * (int(height.max(initial=0)) + 1) + height[keep]
    order = np.argsort(shape, kind="stable")
    keep, shape = keep[order], shape[order]
    bounds = np.flatnonzero(np.r_[True, shape[1:] != shape[:-1]]) if len(keep) else np.zeros(0, np.int64)
    out: List[Tuple[np.ndarray, ...]] = []
    for first, last in zip(bounds, np.r_[bounds[1:], len(keep)]):
        w, h = int(width[keep[first]]), int(height[keep[first]])
        step = max(1, _CANDIDATES_PER_CHUNK // (w * h))
        for start in range(first, last, step):
            tri = keep[start:min(start + step, last)]
            px = (lo[0][tri, None] + np.arange(w))[:, None, :]  # (T, 1, w)
            py = (lo[1][tri, None] + np.arange(h))[:, :, None]  # (T, h, 1)
            inside = np.ones((len(tri), h, w), bool)
            weight = np.zeros((len(tri), h, w))
            # Edge a -> b, opposite vertex c: its edge function is c's barycentric weight times the area.
            for a, b, c in ((1, 2, 0), (2, 0, 1), (0, 1, 2)):
                ax, ay = x[a][tri, None, None], y[a][tri, None, None]
                dx, dy = x[b][tri, None, None] - ax, y[b][tri, None, None] - ay
                e = dx * (py - ay) - dy * (px - ax)
                inside &= e > _edge_floor(dx, dy)
                weight += e * z[c][tri, None, None]
            t, iy, ix = np.nonzero(inside)
            t = tri[t]
            out.append(((lo[1][t] + iy) * n + lo[0][t] + ix, rows[t], weight[inside] / area[t], back[t]))
    if not out:
        return Crossings(n, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    ray, row, height_z, facing_down = (np.concatenate(parts) for parts in zip(*out))
    return Crossings(n, ray, row.astype(np.int64), height_z, facing_down)
