"""Small geometric building blocks shared by the scene model (numpy only)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.spatial import cKDTree


@lru_cache(maxsize=8)
def icosphere(level: int) -> Tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: ``(V, 3)`` float64 vertices and ``(F, 3)`` int32 outward-wound faces."""
    t = (1 + 5**0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
             (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
             (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = np.array(verts, float)
    f = np.array(faces, np.int64)
    for _ in range(level):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mids = len(v) + inv.reshape(3, -1).T  # midpoint index of edges (01, 12, 20) per face
        v = np.concatenate([v, (v[uniq[:, 0]] + v[uniq[:, 1]]) / 2])
        a, b, c = f.T
        ab, bc, ca = mids.T
        f = np.concatenate([np.stack(x, 1) for x in
                            ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v.flags.writeable = False
    f = f.astype(np.int32)
    f.flags.writeable = False
    return v, f


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3, 3)`` rotation matrices, uniform on SO(3)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def rolled_frames(axis: np.ndarray, helper: np.ndarray) -> np.ndarray:
    """Rotations whose local x axis is ``axis`` (``(n, 3)`` unit), rolled about it so that the local
    y axis points along ``helper`` (``(n, 3)``, drawn from a normal distribution: a random roll)
    less its part along ``axis``."""
    y = helper - (helper * axis).sum(1, keepdims=True) * axis
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    z = np.cross(axis, y)
    return np.stack([axis, y, z], axis=2)


def surface_noise(directions: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """Relative radius change of a star-shaped body along unit ``directions``.

    Args:
        directions: ``(..., P, 3)`` unit vectors in the body's local frame.
        terms: ``(..., T, 6)`` rows (kx, ky, kz, frequency, phase, amplitude); ``...`` broadcasts.

    Returns:
        ``(..., P)`` values; the body's radius along a direction is ``1 + value``.
    """
    k = terms[..., None, :, 0:3]  # (..., 1, T, 3)
    proj = (directions[..., :, None, :] * k).sum(-1)  # (..., P, T)
    arg = proj * terms[..., None, :, 3] + terms[..., None, :, 4]
    return (np.sin(arg) * terms[..., None, :, 5]).sum(-1)


def bend(local: np.ndarray, curvature: np.ndarray) -> np.ndarray:
    """Bend points about the local z axis so that the x axis follows a circular arc.

    ``local`` is ``(..., P, 3)``, ``curvature`` (1/um) broadcasts over ``...``; zero leaves points as
    they are. The inverse is ``unbend``.
    """
    k = np.asarray(curvature, float)[..., None]
    x, y, z = local[..., 0], local[..., 1], local[..., 2]
    safe = np.where(np.abs(k) < 1e-9, 1.0, k)
    phi = x * k
    r = 1 / safe - y
    bx = np.where(np.abs(k) < 1e-9, x, np.sin(phi) * r)
    by = np.where(np.abs(k) < 1e-9, y, 1 / safe - np.cos(phi) * r)
    return np.stack([bx, by, z], -1)


def unbend(bent: np.ndarray, curvature: np.ndarray) -> np.ndarray:
    """Inverse of ``bend``."""
    k = np.asarray(curvature, float)[..., None]
    bx, by, z = bent[..., 0], bent[..., 1], bent[..., 2]
    safe = np.where(np.abs(k) < 1e-9, 1.0, k)
    sign = np.sign(safe)
    dx, dy = bx, 1 / safe - by
    r = np.hypot(dx, dy)
    phi = np.arctan2(sign * dx, sign * dy)
    x = np.where(np.abs(k) < 1e-9, bx, phi / safe)
    y = np.where(np.abs(k) < 1e-9, by, 1 / safe - sign * r)
    return np.stack([x, y, z], -1)


def _cut_points(verts: np.ndarray, edges: np.ndarray, vert_plane: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Points where edges ``(E, 2)`` cross their shell's cutting plane (``vert_plane``, the plane's
    z at each vertex): ``(unique cut points (U, 3), index of each edge's point (E,))``. An edge
    shared by two triangles gets one point, computed from its lower-indexed end, so that the cut
    surface stays closed."""
    ends = np.sort(edges, axis=1).astype(np.int64)
    unique, index = np.unique(ends[:, 0] * len(verts) + ends[:, 1], return_inverse=True)
    lo, hi = np.divmod(unique, len(verts))
    a, b = verts[lo], verts[hi]
    z = vert_plane[lo]
    t = (z - a[:, 2]) / (b[:, 2] - a[:, 2])
    points = a + t[:, None] * (b - a)
    points[:, 2] = z
    return points, index.ravel()


def _clip_plane(verts: np.ndarray, faces: np.ndarray, shell: np.ndarray, plane: np.ndarray,
                keep_below: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed shells cut by the planes z = ``plane[shell]``, keeping the side below (or above), each
    cut shell closed again by a fan from the mean of its cut points (see ``clip_to_slab``)."""
    vert_plane = np.zeros(len(verts))
    vert_plane[faces.ravel()] = plane[np.repeat(shell, 3)]
    inside = verts[:, 2] <= vert_plane if keep_below else verts[:, 2] >= vert_plane
    ins = inside[faces]
    count = ins.sum(1)
    keep = [faces[count == 3]]
    kept_shell = [shell[count == 3]]
    cut = (count == 1) | (count == 2)
    f, s, c = faces[cut], shell[cut], count[cut]
    # Rotate each cut triangle (orientation kept) so that its lone vertex, the one on the minority
    # side, comes first: a lone inside vertex keeps a triangle, a lone outside vertex leaves a quad.
    lone = np.where(c == 1, np.argmax(ins[cut], 1), np.argmin(ins[cut], 1))
    f = f[np.arange(len(f))[:, None], (lone[:, None] + np.arange(3)) % 3]
    points, index = _cut_points(verts, np.concatenate([f[:, [0, 1]], f[:, [2, 0]]]), vert_plane)
    base = len(verts)
    ab, ca = base + index[:len(f)], base + index[len(f):]
    one = c == 1
    keep += [np.column_stack([f[one, 0], ab[one], ca[one]]),
             np.column_stack([ab[~one], f[~one, 1], f[~one, 2]]),
             np.column_stack([ab[~one], f[~one, 2], ca[~one]])]
    kept_shell += [s[one], s[~one], s[~one]]
    # The cap closes the new boundary edge (ab -> ca in a kept triangle, ca -> ab in a kept quad)
    # walked backwards, from the shell's centre point on the plane.
    shells, of = np.unique(s, return_inverse=True)
    mids = (points[index[:len(f)]] + points[index[len(f):]]) / 2
    centre = np.column_stack([np.bincount(of, mids[:, k]) for k in range(3)]) / np.bincount(of)[:, None]
    centre_id = base + len(points) + of
    keep.append(np.column_stack([centre_id, np.where(one, ca, ab), np.where(one, ab, ca)]))
    kept_shell.append(s)
    return (np.concatenate([verts, points, centre]), np.concatenate(keep).astype(np.int64),
            np.concatenate(kept_shell))


def clip_to_slab(verts: np.ndarray, faces: np.ndarray, rows: np.ndarray, shell_faces: int, z0: float,
                 z1: float, stagger: float = 0.0, phase: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of closed shells between the planes ``z0 <= z <= z1``, closed by caps on the planes
    (a volume renderer then spends no step outside the section).

    A shell is a block of ``shell_faces`` consecutive faces (one lobe or cell body); its caps are fans
    from the mean of its cut points, so each section of a shell must be star-shaped about that point,
    as the near-ellipsoidal sections of nuclei and cells are. With ``stagger`` > 0, shell k is cut
    ``stagger * (2 * (k % 32) + phase + 1)`` outside the planes instead, so that the caps of
    overlapping shells (a nucleus in its cell body, touching cells) never lie at the same depth,
    where a ray tracer may take one surface for the other. Returns (vertices, faces, cell row of
    each face) like the input; shells wholly outside the slab are gone.
    """
    shell = np.arange(len(faces)) // shell_faces
    shell_row = rows[::shell_faces]
    spacing = stagger * (2 * (np.arange(len(shell_row)) % 32) + phase + 1)
    for plane, keep_below in ((z1 + spacing, True), (z0 - spacing, False)):
        verts, faces, shell = _clip_plane(verts, faces, shell, plane, keep_below)
    return verts, faces.astype(np.int32), shell_row[shell].astype(np.int32)


class SphereIndex:
    """Spheres placed so far, hashed on a grid for fast overlap queries.

    The region is periodic in z (every sphere also blocks at z +- period): without that, random
    sequential placement packs the faces of the region denser than its middle, where the slab is.
    """

    def __init__(self, cell: float, period_z: Optional[float]) -> None:
        self.cell = cell
        periods = (0.0,) if period_z is None else (0.0, period_z, -period_z)
        self.shifts = [np.array([0.0, 0.0, d]) for d in periods]
        self.grid: Dict[tuple, List[int]] = {}
        self.centres: List[Tuple[float, float, float]] = []
        self.radii: List[float] = []
        self.r_max = 0.0
        self._placed: Optional[Tuple[cKDTree, np.ndarray]] = None  # centres' tree and radii, for ``hits``

    def _key(self, p: np.ndarray) -> tuple:
        return tuple(np.floor(p / self.cell).astype(int))

    def collides(self, centres: np.ndarray, radii: np.ndarray, gap: float) -> bool:
        # Plain floats: this runs for every candidate sphere, where numpy's per-call cost dominates.
        # Grid cells within reach of the largest sphere placed: one each way while reaches fit a cell.
        for (x, y, z), r in zip(centres.tolist(), radii.tolist()):
            kx, ky, kz = (math.floor(v / self.cell) for v in (x, y, z))
            span = range(-(k := max(1, math.ceil((r + self.r_max + gap) / self.cell))), k + 1)
            for dx in span:
                for dy in span:
                    for dz in span:
                        for j in self.grid.get((kx + dx, ky + dy, kz + dz), ()):
                            cx, cy, cz = self.centres[j]
                            reach = self.radii[j] + r + gap
                            if (cx - x) ** 2 + (cy - y) ** 2 + (cz - z) ** 2 < reach * reach:
                                return True
        return False

    def hits(self, centres: np.ndarray, radii: np.ndarray, gap: float) -> np.ndarray:
        """Per sphere, whether it overlaps one placed so far: ``collides`` for many spheres at once
        (the same test), to rule out most candidates of a batch before the sequential placement
        checks the rest one by one."""
        hit = np.zeros(len(centres), bool)
        if not self.centres or not len(centres):
            return hit
        if self._placed is None:  # built once for all the candidates of a batch
            self._placed = cKDTree(np.array(self.centres)), np.array(self.radii)
        tree, placed_r = self._placed
        placed = tree.data
        reach_max = radii.max() + placed_r.max() + gap + 1e-6
        pairs = cKDTree(centres).sparse_distance_matrix(tree, reach_max, output_type="ndarray")
        i, j = pairs["i"].astype(int), pairs["j"].astype(int)
        d = placed[j] - centres[i]
        reach = placed_r[j] + radii[i] + gap
        overlap = d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2 < reach * reach
        np.logical_or.at(hit, i, overlap)
        return hit

    def add(self, centres: np.ndarray, radii: np.ndarray, periodic: bool = True) -> None:
        """Add spheres; ``periodic=False`` adds them once, without their copies at z +- period."""
        self._placed = None
        self.r_max = max(self.r_max, float(np.max(radii, initial=0.0)))
        for p, r in zip(centres, radii):
            for shift in (self.shifts if periodic else self.shifts[:1]):
                self.grid.setdefault(self._key(p + shift), []).append(len(self.centres))
                self.centres.append(tuple((p + shift).tolist()))
                self.radii.append(float(r))
