"""Vertical rays through meshes (``arctique.labels.trace``), on meshes whose answers are known."""

from __future__ import annotations

import numpy as np

from arctique.labels.trace import crossings
from arctique.scene.geometry import icosphere

SIZE, MPP = 8, 1.0  # pixel centres at x, y = -3.5 .. 3.5


def sphere(centre, radius, row):
    verts, faces = icosphere(3)
    return np.asarray(centre) + radius * verts, faces.astype(np.int32), np.full(len(faces), row, np.int32)


def joined(*meshes):
    verts, faces, rows, offset = [], [], [], 0
    for v, f, r in meshes:
        verts.append(v)
        faces.append(f + offset)
        rows.append(r)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(rows)


def test_a_ray_on_an_edge_shared_by_two_triangles_crosses_once():
    """A square over the field cut along its diagonal, which runs through the centres of the
    diagonal pixels: every ray crosses it exactly once."""
    verts = np.array([[-4.0, -4.0, 0.0], [4.0, -4.0, 0.0], [4.0, 4.0, 0.0], [-4.0, 4.0, 0.0]])
    mesh = verts, np.array([[0, 1, 2], [0, 2, 3]], np.int32), np.zeros(2, np.int32)
    hits = crossings(mesh, SIZE, MPP, 1, (-1.0, 1.0))
    assert np.array_equal(np.bincount(hits.ray, minlength=SIZE**2), np.ones(SIZE**2, int))
    assert np.all(hits.z == 0)


def test_first_hit_below_the_slab_top_counts_inside_the_slab_or_on_a_back_face():
    """Cell 1: a sphere that holds the slab top, whose bottom lies under the slab bottom near its
    axis (the ray starts inside it: its back face there counts); cell 2: a sphere under the slab
    bottom (its front face does not count)."""
    z0, z1 = -1.0, 1.0
    mesh = joined(sphere((-2.0, 0.0, 0.5), 1.9, 0), sphere((2.0, 0.0, -3.0), 1.9, 1))
    traced = crossings(mesh, SIZE, MPP, 1, (-np.inf, z1)).top_down()
    ids = np.array([1, 2])
    c = (np.arange(SIZE) + 0.5 - SIZE / 2) * MPP
    y, x = np.meshgrid(-c, c, indexing="ij")
    first = traced.first_below(z1, z0, ids)
    assert np.all(first[np.hypot(x + 2.0, y) < 1.0] == 1) and np.all(first[np.hypot(x + 2.0, y) > 2.0] == 0)
    # Cross-sections: the lower sphere holds the points at its centre's depth, none above its top.
    assert np.all(traced.first_below(-3.0, np.inf, ids)[np.hypot(x - 2.0, y) < 1.5] == 2)
    assert not traced.first_below(-1.05, np.inf, ids)[x > 0].any()


def test_intervals_pair_entry_and_exit_within_the_slab():
    """A sphere of radius 3 around a slab 2 thick: one piece per ray, clipped to the slab near the
    axis and shorter towards the outline."""
    slab = (-1.0, 1.0)
    pieces = crossings(sphere((0.0, 0.0, 0.0), 3.0, 0), SIZE, MPP, 1, slab).intervals(slab)
    assert len(pieces.ray) == len(np.unique(pieces.ray)) > 0
    row, col = np.divmod(pieces.ray, SIZE)
    axis = np.hypot(col + 0.5 - SIZE / 2, SIZE / 2 - row - 0.5) * MPP
    near = axis < 2.7  # sqrt(3^2 - 1) = 2.83: the sphere holds the slab across
    assert np.all(pieces.top[near] == slab[1]) and np.all(pieces.bottom[near] == slab[0])
    assert np.all(pieces.top[~near] < slab[1]) and np.all(pieces.top > pieces.bottom)
