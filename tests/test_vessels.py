"""Capillaries of the lamina propria: geometry of tubes, endothelial nuclei and red-cell rows, their
tissue-mask classes and their random streams (no bpy)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from arctique.classes import CLASS_IDS
from arctique.compose import load_config
from arctique.labels.exact import tissue_mask
from arctique.scene import build_scene
from scipy.spatial import cKDTree

from arctique.scene.architecture import crypt_tree, ellipsoid_depth, ellipsoid_labels, vessel_parts, wall_clearance
from arctique.scene.cells import inside_nucleus
from arctique.scene.model import BLOOD, RIP, STROMA, VESSEL, VESSEL_LUMEN, VESSEL_WALL
from arctique.scene.vessels import VESSEL_STEP_UM, endothelial, pieces

# A 128 um field at 1 um/px, cut across the crypts (capillary columns as rings, links as channels)
# and along them (the reverse).
SMALL = ["optics.image_size=128", "optics.mpp=1.0"]
ACROSS = SMALL + ["tissue.section.tilt_deg=[0,5]"]
ALONG = SMALL + ["tissue.section.tilt_deg=[85,90]"]


@lru_cache(maxsize=None)
def built(overrides: tuple, seed: int):
    return build_scene(load_config(list(overrides)), seed)


def _tubes(vessels, points):
    """Brute force: signed distance of points from the union of the lumens and from the union of the
    tubes (each piece: distance to its nearest sample minus its radius)."""
    lumen_sd, outer_sd = np.full(len(points), np.inf), np.full(len(points), np.inf)
    for rows in pieces(vessels):
        d = np.linalg.norm(points[:, None] - vessels.centre[rows][None], axis=2).min(1)
        lumen_sd = np.minimum(lumen_sd, d - vessels.lumen[rows[0]])
        outer_sd = np.minimum(outer_sd, d - vessels.lumen[rows[0]] - vessels.wall[rows[0]])
    return lumen_sd, outer_sd


def _tangents(vessels):
    """Unit centreline direction at every sample, piece by piece."""
    out = np.zeros_like(vessels.centre)
    for rows in pieces(vessels):
        out[rows] = np.gradient(vessels.centre[rows], axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _ellipsoid_surface(centre, rotation, axes, n=64):
    """Points on an ellipsoid's surface: its rim densely, and both faces."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rim = np.column_stack([np.cos(t), np.sin(t), np.zeros(n)])
    faces = np.array([[0, 0, 1.0], [0, 0, -1.0]])
    return centre + (np.concatenate([rim, faces]) * axes) @ rotation.T


@pytest.mark.parametrize("overrides", [ACROSS, ALONG])
def test_capillaries_cross_the_section_and_keep_clear_of_the_epithelium(overrides):
    """Over a few seeds, capillaries cross every kind of section; each centreline sample keeps the
    tube's outer surface tissue.vessels.clearance_um from the epithelium; samples of a piece are
    evenly spaced; lumen and wall come from their configured ranges."""
    cfg = load_config(overrides)
    v_conf = cfg.tissue.vessels
    shown = 0
    for seed in range(4):
        scene = built(tuple(overrides), seed)
        v = scene.vessels
        if len(v.centre) == 0:
            continue
        clearance = wall_clearance(v.centre, scene.section, scene.crypts, crypt_tree(scene.crypts))
        assert np.all(clearance >= v.lumen + v.wall + v_conf.clearance_um - 1e-9)
        assert np.all((2 * v.lumen >= v_conf.lumen_um[0]) & (2 * v.lumen <= v_conf.lumen_um[1]))
        assert np.all((v.wall >= v_conf.wall_um[0]) & (v.wall <= v_conf.wall_um[1]))
        for rows in pieces(v):
            step = np.linalg.norm(np.diff(v.centre[rows], axis=0), axis=1)
            assert np.all(step <= VESSEL_STEP_UM + 1e-9) and np.ptp(step) < 0.01 * VESSEL_STEP_UM
        mask = tissue_mask(scene, cfg.optics.image_size, cfg.optics.mpp)
        shown += np.any(mask == VESSEL)
    assert shown >= 2, "capillaries in the section"


@pytest.mark.parametrize("overrides, seed", [(ACROSS, 0), (ALONG, 1)])
def test_red_cells_of_capillaries_lie_in_the_lumen_in_touching_rows(overrides, seed):
    """Every red blood cell is either wholly inside a capillary lumen or wholly outside the tubes
    (extravasated); those inside stand across the capillary (disc axis within rbc_tilt_deg of the
    centreline) and sit in rows: the next cell along the axis is rbc_packing x thickness away."""
    cfg = load_config(overrides)
    scene = built(tuple(overrides), seed)
    v, blood = scene.vessels, scene.blood
    conf, thickness = cfg.tissue.vessels, cfg.tissue.blood.thickness_um
    inside = []
    for i in range(len(blood.centre)):
        lumen_sd, outer_sd = _tubes(v, _ellipsoid_surface(blood.centre[i], blood.rotation[i], blood.axes[i]))
        in_lumen, outside = lumen_sd < 0, outer_sd >= 0
        assert in_lumen.all() or outside.all(), f"red cell {i} crosses a capillary wall"
        inside.append(in_lumen.all())
    inside = np.array(inside)
    assert inside.sum() >= 10, "red cells in the capillaries"
    centre, rotation = blood.centre[inside], blood.rotation[inside]
    # The capillary's direction at the cell: of the centreline samples whose lumen holds the cell's
    # centre (more than one piece where capillaries meet), the one best aligned with the disc axis.
    tangents = _tangents(v)
    tangent = np.zeros_like(centre)
    for i, (c, r) in enumerate(zip(centre, rotation)):
        near = np.nonzero(np.linalg.norm(v.centre - c, axis=1) < v.lumen)[0]
        tangent[i] = tangents[near[np.argmax(np.abs(tangents[near] @ r[:, 2]))]]
    cos_tilt = np.abs(np.einsum("ij,ij->i", rotation[:, :, 2], tangent))
    assert np.all(cos_tilt >= np.cos(np.radians(conf.rbc_tilt_deg)) - 1e-3)
    # Rows: the nearest neighbour along the axis, pooled over cells, is one pitch away.
    pitch = conf.rbc_packing * thickness
    axial = []
    for i in range(len(centre)):
        offset = centre - centre[i]
        along = offset @ tangent[i]
        across = np.linalg.norm(offset - along[:, None] * tangent[i], axis=1)
        near = (np.abs(along) > 1e-9) & (across < v.lumen.max())
        if near.any():
            axial.append(np.abs(along[near]).min())
    axial = np.array(axial)
    assert np.median(axial) == pytest.approx(pitch, rel=0.05)
    assert np.mean(np.abs(axial - pitch) < 0.1 * pitch) > 0.8


@pytest.mark.parametrize("overrides, seed", [(ACROSS, 0), (ALONG, 3)])
def test_endothelial_nuclei_lie_flat_on_the_capillary_wall(overrides, seed):
    """Endothelial nuclei are connective-class (FIB) nuclei centred in the wall, long axis along
    the capillary and flat axis radial, sized by tissue.vessels.endothelium; no other nucleus
    reaches into a capillary."""
    cfg = load_config(overrides)
    scene = built(tuple(overrides), seed)
    cells, v = scene.cells, scene.vessels
    conf = cfg.tissue.vessels.endothelium
    wall = endothelial(cells, v)
    rows = np.nonzero(wall)[0]
    assert len(rows) >= 3
    assert np.all(cells.cls[rows] == CLASS_IDS["FIB"])
    lumen_sd, outer_sd = _tubes(v, cells.centre[rows])
    assert np.all((lumen_sd >= 0) & (outer_sd < 0)), "centred in a wall"
    # Each sits mid-wall of a centreline sample (where capillaries meet, the nearest sample may be
    # another capillary's): the sample whose mid-wall distance it matches best is its own.
    distance = np.linalg.norm(cells.centre[rows, None] - v.centre[None], axis=2)
    mismatch = np.abs(distance - (v.lumen + v.wall / 2))
    k = mismatch.argmin(axis=1)
    assert np.all(mismatch[np.arange(len(rows)), k] <= 0.02)
    tangent = _tangents(v)[k]
    long_axis, flat_axis = cells.rotation[rows, :, 0], cells.rotation[rows, :, 2]
    assert np.all(np.abs(np.einsum("ij,ij->i", long_axis, tangent)) > 0.99)
    radial = cells.centre[rows] - v.centre[k]
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert np.all(np.abs(np.einsum("ij,ij->i", flat_axis, radial)) > 0.99)
    size = 2 * cells.lobe_axes[rows, 0]
    for axis, (lo, hi) in enumerate((conf.length_um, conf.width_um, conf.thickness_um)):
        assert np.all((size[:, axis] >= lo - 1e-9) & (size[:, axis] <= hi + 1e-9))
    # Points inside every other nucleus lie outside the capillaries.
    rng = np.random.default_rng(seed)
    for row in np.nonzero(~wall)[0][::5]:
        p = cells.centre[row] + rng.uniform(-1, 1, size=(300, 3)) * cells.lobe_axes[row].max()
        p = p[inside_nucleus(p, cells, row)]
        assert np.all(vessel_parts(v, p) == 0), f"nucleus {row} enters a capillary"


def test_tissue_mask_shows_blood_inside_capillaries_cut_by_the_section():
    """Where a capillary crosses the section's mid-plane, the mask shows its wall and plasma as
    VESSEL and its red cells as BLOOD, enclosed by the wall: no BLOOD pixel of a capillary touches
    stroma directly (a tear may cut through a capillary)."""
    cfg = load_config(ACROSS)
    # The mask of the same field at 0.25 um/px, finer than the thinnest wall (coarser pixels could
    # step over a wall).
    size, mpp = cfg.optics.image_size * 4, cfg.optics.mpp / 4
    found = 0
    for seed in range(4):
        scene = built(tuple(ACROSS), seed)
        mask = tissue_mask(scene, size, mpp)
        c = (np.arange(size) + 0.5 - size / 2) * mpp
        x, y = np.meshgrid(c, c[::-1])
        points = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, (scene.section.z0 + scene.section.z1) / 2)])
        parts = vessel_parts(scene.vessels, points).reshape(size, size)
        lumen_blood = (mask == BLOOD) & (parts == VESSEL_LUMEN)
        found += lumen_blood.sum()
        assert not np.any((mask == BLOOD) & (parts == VESSEL_WALL))
        assert np.all(mask[parts == VESSEL_WALL] != STROMA)
        # 4-neighbours of capillary blood are blood, vessel or tear (or the field's edge).
        padded = np.pad(mask, 1, constant_values=VESSEL)
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            neighbour = padded[1 + dy:1 + dy + size, 1 + dx:1 + dx + size]
            assert np.all(np.isin(neighbour[lumen_blood], (BLOOD, VESSEL, RIP))), seed
    assert found >= 20


def test_red_cells_show_as_the_path_through_them_across_the_slab():
    """The blood a ray crossing the slab meets is the length of its path inside red cells, rows of
    overlapping cells counted once: equal to sampling the ray at 0.01 um steps; a cell off the
    mid-plane still shows, and no path is longer than the slab or than a cell is wide."""
    scene = built(tuple(ACROSS + ["tissue.blood.strength=5"]), 1)
    sec, blood = scene.section, scene.blood
    assert len(blood.centre) > 20
    rng = np.random.default_rng(0)
    near = blood.centre[rng.integers(len(blood.centre), size=400), :2]
    xy = near + rng.uniform(-4, 4, size=near.shape)
    depth = ellipsoid_depth(xy, blood, sec.z0, sec.z1)
    steps = int(round(sec.thickness / 0.01))
    zs = sec.z0 + (np.arange(steps) + 0.5) * sec.thickness / steps
    points = np.column_stack([np.repeat(xy, steps, 0), np.tile(zs, len(xy))])
    sampled = (ellipsoid_labels(points, blood, cKDTree(points)) > 0).reshape(len(xy), steps).mean(1) * sec.thickness
    assert np.abs(depth - sampled).max() < 0.03
    assert (depth > 0).mean() > 0.1 and depth.max() <= min(sec.thickness, 2 * blood.axes.max()) + 1e-9
    mid_plane = np.column_stack([xy, np.full(len(xy), (sec.z0 + sec.z1) / 2)])
    on_mid = ellipsoid_labels(mid_plane, blood, cKDTree(mid_plane)) > 0
    assert np.any((depth > 0) & ~on_mid), "a red cell off the mid-plane shows"


@pytest.mark.parametrize("tilt_deg", [0.0, 50.0])
def test_a_biconcave_red_cell_keeps_its_outline_and_thins_in_the_middle(tilt_deg):
    """Seen through the slab, a biconcave red cell covers the pixels its ellipsoid covers; face-on it
    is thickest near 0.7 of its radius, as thick there as the ellipsoid's centre, and about a third
    as thick in its middle (the central pallor); tilted, its middle still shows less than the
    ellipsoid's."""
    from arctique.scene.model import Ellipsoids

    turn = np.radians(tilt_deg)
    rotation = np.array([[1, 0, 0], [0, np.cos(turn), -np.sin(turn)], [0, np.sin(turn), np.cos(turn)]])
    cell = Ellipsoids(centre=np.zeros((1, 3)), rotation=rotation[None], axes=np.array([[3.75, 3.75, 1.1]]))
    xy = np.column_stack([np.linspace(-4.5, 4.5, 901), np.zeros(901)])
    ellipsoid = ellipsoid_depth(xy, cell, -10, 10)
    disc = ellipsoid_depth(xy, cell, -10, 10, biconcavity=1.0)
    np.testing.assert_array_equal(disc > 0, ellipsoid > 0)
    middle = np.abs(xy[:, 0]) < 0.01
    assert disc[middle].max() < 0.75 * ellipsoid[middle].min()
    if tilt_deg == 0:
        assert disc.max() == pytest.approx(2.2, abs=0.01)
        assert abs(xy[disc.argmax(), 0]) == pytest.approx(0.7 * 3.75, abs=0.1)
        assert disc[middle].mean() == pytest.approx(2.2 * 0.315, abs=0.02)


def test_capillaries_have_their_own_streams():
    """Extravasated blood and stroma density leave the capillaries, their endothelium and their red
    cells as they were; the capillary streams leave crypts and epithelium as they were."""
    base = built(tuple(ACROSS), 0)
    extra = built(tuple(ACROSS + ["tissue.blood.strength=3", "cells.stroma_density=0.6"]), 0)
    for name in ("centre", "piece", "lumen", "wall"):
        assert np.array_equal(getattr(base.vessels, name), getattr(extra.vessels, name))
    a, b = endothelial(base.cells, base.vessels), endothelial(extra.cells, extra.vessels)
    assert np.array_equal(base.cells.centre[a], extra.cells.centre[b])
    assert len(extra.blood.centre) > len(base.blood.centre)
    in_a = vessel_parts(base.vessels, base.blood.centre) == VESSEL_LUMEN
    in_b = vessel_parts(extra.vessels, extra.blood.centre) == VESSEL_LUMEN
    assert in_a.sum() >= 10 and np.array_equal(base.blood.centre[in_a], extra.blood.centre[in_b])
    # Fewer capillary columns: the others stay where they were, and so do crypts and epithelium.
    for seed in (0, 1):
        base = built(tuple(ACROSS), seed)
        fewer = built(tuple(ACROSS + ["tissue.vessels.column_fraction=0.1"]), seed)
        epi = CLASS_IDS["EPI"]
        assert np.array_equal(base.cells.centre[base.cells.cls == epi], fewer.cells.centre[fewer.cells.cls == epi])
        assert {tuple(p) for p in fewer.vessels.centre} <= {tuple(p) for p in base.vessels.centre}


def test_no_capillaries_when_switched_off():
    scene = built(tuple(ACROSS + ["tissue.vessels.column_fraction=0", "tissue.vessels.link_spacing_um=0"]), 0)
    assert len(scene.vessels.centre) == 0 and not endothelial(scene.cells, scene.vessels).any()
    assert not np.any(tissue_mask(scene, 128, 1.0) == VESSEL)
