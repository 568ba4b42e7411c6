"""Capillaries of the lamina propria: tubes between the crypts, their endothelial nuclei and the
rows of red blood cells in their lumens.

The network follows the crypt lattice in the tissue frame. Where three crypts meet, the stroma forms
a column along the crypts: a share of these columns carries a capillary along the crypt axes
(following the meander of the three crypts, plus its own winding). Between two neighbouring crypts,
links cross the stroma from one column to the next at random depths, bowing sideways and up or
down. A cross-section of the mucosa therefore cuts the columns across (small rings) and the links
along (channels); a longitudinal section the reverse. Every tube keeps ``clearance_um`` from the
epithelium: where a crypt comes closer, the tube is interrupted.

Each capillary is stored as centreline samples (``model.Vessels``) with its lumen radius and wall
thickness, so every compartment test is a nearest-sample query.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from ..classes import CLASS_IDS
from ..config import BloodConf, CellTypeConf, EndotheliumConf, VesselsConf
from .architecture import axis_point, scene_box, vessel_clearance, vessel_parts, wall_clearance
from .model import VESSEL_WALL, Cells, Crypts, Ellipsoids, Section, Vessels
from .stroma import empty_cells, flat_nuclei

# Lizard / CoNIC count endothelial nuclei as connective tissue: our fibroblast class.
ENDOTHELIUM_CLASS = "FIB"
VESSEL_STEP_UM = 0.5  # spacing of the centreline samples: the tube surface deviates < 0.01 um from a smooth one
# Pieces of tube shorter than this many lumen radii (where crypts interrupt a capillary) are left out:
# such stubs would show as isolated blobs.
MIN_PIECE_RADII = 4.0
SLIVER_RADII = 2.0  # lattice triangles whose circumradius exceeds this many times the median are slivers


def _circumcentres(points: np.ndarray, simplices: np.ndarray) -> np.ndarray:
    """Centres of the circles through the three points of each triangle (the Voronoi vertices)."""
    a, b, c = (points[simplices[:, k]] for k in range(3))
    ab, ac = b - a, c - a
    d = 2 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    nab, nac = (ab**2).sum(1), (ac**2).sum(1)
    ux = (ac[:, 1] * nab - ab[:, 1] * nac) / d
    uy = (ab[:, 0] * nac - ac[:, 0] * nab) / d
    return a + np.column_stack([ux, uy])


def _resample(path: np.ndarray, step: float) -> np.ndarray:
    """Points along a polyline ``(n, 3)`` at equal arc-length spacing of at most ``step``."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(s[-1] / step)), 1) + 1
    t = np.linspace(0, s[-1], n)
    return np.column_stack([np.interp(t, s, path[:, k]) for k in range(3)])


def _frames(tangent: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to each unit ``tangent`` (n, 3) and to each other."""
    helper = np.where(np.abs(tangent[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(tangent, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(tangent, e1)


def _tangents(centre: np.ndarray) -> np.ndarray:
    t = np.gradient(centre, axis=0) if len(centre) > 1 else np.array([[0.0, 0.0, 1.0]])
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def _along(centre: np.ndarray, a: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point, unit tangent and nearest sample index at arc lengths ``a`` along one piece's samples."""
    f = np.clip(a / VESSEL_STEP_UM, 0, len(centre) - 1)
    j0 = np.minimum(np.floor(f).astype(int), len(centre) - 2) if len(centre) > 1 else np.zeros(len(a), int)
    frac = (f - j0)[:, None]
    j1 = np.minimum(j0 + 1, len(centre) - 1)
    point = centre[j0] * (1 - frac) + centre[j1] * frac
    tangent = _tangents(centre)
    t = tangent[j0] * (1 - frac) + tangent[j1] * frac
    return point, t / np.linalg.norm(t, axis=1, keepdims=True), np.round(f).astype(int)


def pieces(vessels: Vessels) -> List[np.ndarray]:
    """Row indices of the centreline samples of each unbroken piece of tube, in order."""
    if len(vessels.piece) == 0:
        return []
    cut = np.nonzero(np.diff(vessels.piece))[0] + 1
    return np.split(np.arange(len(vessels.piece)), cut)


def sample_vessels(conf: VesselsConf, section: Section, crypts: Crypts, tree: cKDTree, pad: float,
                   rng: np.random.Generator) -> Vessels:
    """The capillaries within ``pad`` of the slab (and within the scene box laterally)."""
    if len(crypts.centre) < 3 or (conf.column_fraction <= 0 and conf.link_spacing_um <= 0):
        return Vessels.empty()
    lo, hi = scene_box(section, pad)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    q = section.to_tissue(corners)
    qmin, qmax = q.min(0), q.max(0)
    tri = Delaunay(crypts.centre)
    simplices = tri.simplices
    vertex = _circumcentres(crypts.centre, simplices)
    n_tri = len(simplices)
    # Draws for every triangle and neighbour pair of the lattice, in a fixed order.
    column = rng.random(n_tri) < conf.column_fraction
    tri_lumen = rng.uniform(*conf.lumen_um, size=n_tri) / 2
    tri_wall = rng.uniform(*conf.wall_um, size=n_tri)
    tri_phase = rng.uniform(0, 2 * np.pi, size=(n_tri, 2))
    tri_amp = rng.uniform(0.3, 1.0, size=(n_tri, 2)) * conf.meander_um
    edges = np.array([(t, n) for t in range(n_tri) for n in tri.neighbors[t] if n > t], int).reshape(-1, 2)
    outer = conf.lumen_um[1] / 2 + conf.wall_um[1]
    w_lo, w_hi = qmin[2] - conf.meander_um - outer, qmax[2] + conf.meander_um + outer
    if conf.link_spacing_um > 0:
        n_links = rng.poisson((w_hi - w_lo) / conf.link_spacing_um, size=len(edges))
    else:
        n_links = np.zeros(len(edges), int)
    total = int(n_links.sum())
    link_edge = np.repeat(np.arange(len(edges)), n_links)
    link_w = rng.uniform(w_lo, w_hi, size=total)
    link_lumen = rng.uniform(*conf.lumen_um, size=total) / 2
    link_wall = rng.uniform(*conf.wall_um, size=total)
    link_bow = rng.uniform(-1, 1, size=(total, 3)) * conf.meander_um

    def column_uv(t: int, w: np.ndarray) -> np.ndarray:
        """(u, v) of the column of triangle ``t`` at depths ``w``: the Voronoi vertex moved with the
        meander of its three crypts, plus the column's own winding."""
        warp = np.mean([axis_point(crypts, np.full(len(w), j), w) - crypts.centre[j] for j in simplices[t]], 0)
        arg = 2 * np.pi * w[:, None] / conf.meander_wavelength_um + tri_phase[t]
        return vertex[t] + warp + tri_amp[t] * np.sin(arg)

    # Slivers on the hull of the crypt lattice have circumcentres far outside it: no stroma column
    # runs there, and a link to one would cross the whole scene.
    radius = np.linalg.norm(crypts.centre[simplices[:, 0]] - vertex, axis=1)
    regular = radius <= SLIVER_RADII * np.median(radius)
    # Vertices farther than one edge from the scene box cannot bring a capillary into it.
    reach = np.max(radius[regular]) * 2 + outer
    near = regular & ((vertex >= qmin[:2] - reach) & (vertex <= qmax[:2] + reach)).all(1)
    paths: List[Tuple[np.ndarray, float, float]] = []  # tissue-frame samples, lumen radius, wall
    w_axis = np.arange(w_lo, w_hi + VESSEL_STEP_UM, VESSEL_STEP_UM / 2)
    for t in np.nonzero(column & near)[0]:
        uv = column_uv(t, w_axis)
        paths.append((np.column_stack([uv, w_axis]), tri_lumen[t], tri_wall[t]))
    for k in range(total):
        a, b = edges[link_edge[k]]
        if not (near[a] or near[b]) or not (regular[a] and regular[b]):
            continue
        w0 = np.array([link_w[k]])
        pa, pb = column_uv(a, w0)[0], column_uv(b, w0)[0]
        length = np.linalg.norm(pb - pa)
        s = np.linspace(0, 1, max(int(np.ceil(length / (VESSEL_STEP_UM / 2))), 2) + 1)
        side = np.array([-(pb - pa)[1], (pb - pa)[0]]) / max(length, 1e-9)
        bow = link_bow[k]
        uv = pa + s[:, None] * (pb - pa) + (bow[0] * np.sin(np.pi * s) + bow[1] * np.sin(2 * np.pi * s))[:, None] * side
        w = link_w[k] + bow[2] * np.sin(np.pi * s)
        paths.append((np.column_stack([uv, w]), link_lumen[k], link_wall[k]))

    centres, piece_ids, lumens, walls = [], [], [], []
    n_pieces = 0
    for path, lumen, wall in paths:
        p = section.to_section(_resample(path, VESSEL_STEP_UM))
        keep = (p >= lo).all(1) & (p <= hi).all(1)
        if not keep.any():
            continue
        keep[keep] = wall_clearance(p[keep], section, crypts, tree) >= lumen + wall + conf.clearance_um
        runs = np.split(np.arange(len(p)), np.nonzero(np.diff(keep.astype(int)))[0] + 1)
        for run in runs:
            if not keep[run[0]] or (len(run) - 1) * VESSEL_STEP_UM < MIN_PIECE_RADII * lumen:
                continue
            centres.append(p[run])
            piece_ids.append(np.full(len(run), n_pieces, np.int32))
            lumens.append(np.full(len(run), lumen))
            walls.append(np.full(len(run), wall))
            n_pieces += 1
    if not centres:
        return Vessels.empty()
    return Vessels(centre=np.concatenate(centres), piece=np.concatenate(piece_ids),
                   lumen=np.concatenate(lumens), wall=np.concatenate(walls))


def capillary_blood(conf: VesselsConf, blood: BloodConf, vessels: Vessels, rng: np.random.Generator) -> Ellipsoids:
    """Red blood cells in rows along the capillary lumens (rouleaux): runs of ``rbc_row_um`` filled
    with discs whose faces touch (centre distance ``rbc_packing`` x thickness), the runs covering
    about ``rbc_fill`` of each piece of tube. A disc is as wide as the cell or, in a narrower lumen,
    squeezed to fit it, and stands across the capillary, tilted by at most ``rbc_tilt_deg``."""
    half = blood.thickness_um / 2
    pitch = conf.rbc_packing * blood.thickness_um
    row_mean = float(np.mean(conf.rbc_row_um))
    centres, rotations, axes = [], [], []
    for rows in pieces(vessels):
        c, lumen = vessels.centre[rows], vessels.lumen[rows[0]]
        length = (len(rows) - 1) * VESSEL_STEP_UM
        fill = rng.uniform(*conf.rbc_fill)
        if fill <= 0:
            continue
        gap_mean = row_mean * (1 - fill) / fill
        positions = []
        s = rng.uniform(0, row_mean + gap_mean) - row_mean  # the pattern starts anywhere in its cycle
        while s < length:
            row = rng.uniform(*conf.rbc_row_um)
            k = np.arange(int(row // pitch) + 1)
            positions.append(s + half + k * pitch)
            s += row + (rng.exponential(gap_mean) if gap_mean > 0 else 0.0) + pitch
        a = np.concatenate(positions) if positions else np.zeros(0)
        a = a[(a >= half) & (a <= length - half)]
        if len(a) == 0:
            continue
        axis, tangent, _ = _along(c, a)
        e1, e2 = _frames(tangent)
        # The widest disc whose rim stays in the lumen at any tilt up to the greatest (a disc of
        # radius r tilted by t reaches r cos t + half sin t <= r + half sin t from the axis).
        radius = max(min(blood.diameter_um / 2, lumen - half * np.sin(np.radians(conf.rbc_tilt_deg))), half)
        tilt = np.radians(rng.uniform(0, conf.rbc_tilt_deg, size=len(a)))
        turn = rng.uniform(0, 2 * np.pi, size=len(a))
        lean = np.cos(turn)[:, None] * e1 + np.sin(turn)[:, None] * e2
        z = np.cos(tilt)[:, None] * tangent + np.sin(tilt)[:, None] * lean
        x, y = _frames(z)
        # Off-centre within the slack the lumen leaves around the (tilted) disc.
        extent = radius * np.cos(tilt) + half * np.sin(tilt)
        slack = np.maximum(lumen - extent, 0) * rng.uniform(0, 1, size=len(a))
        side = rng.uniform(0, 2 * np.pi, size=len(a))
        offset = slack[:, None] * (np.cos(side)[:, None] * e1 + np.sin(side)[:, None] * e2)
        centres.append(axis + offset)
        rotations.append(np.stack([x, y, z], axis=2))
        axes.append(np.tile([radius, radius, half], (len(a), 1)))
    if not centres:
        return Ellipsoids(centre=np.zeros((0, 3)), rotation=np.zeros((0, 3, 3)), axes=np.zeros((0, 3)))
    return Ellipsoids(centre=np.concatenate(centres), rotation=np.concatenate(rotations), axes=np.concatenate(axes))


def build_endothelium(conf: EndotheliumConf, fib: CellTypeConf, scale: float, vessels: Vessels,
                      section: Section, rng: np.random.Generator) -> Cells:
    """Endothelial nuclei along the capillary walls (class FIB): every ``spacing_um`` along a piece
    of tube, at a random angle around it, centred in the wall, long axis along the capillary, the
    flat axis radial. Nuclei that cannot reach the slab, or would touch an earlier one where
    capillaries meet, are left out. Shape noise and appearance are those of fibroblasts."""
    spots, frames = [], []
    for rows in pieces(vessels):
        c = vessels.centre[rows]
        length = (len(rows) - 1) * VESSEL_STEP_UM
        a = np.arange(rng.uniform(0, conf.spacing_um), length, conf.spacing_um)
        theta = rng.uniform(0, 2 * np.pi, size=len(a))
        if len(a) == 0:
            continue
        axis, tangent, j = _along(c, a)
        e1, e2 = _frames(tangent)
        radial = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2
        r = vessels.lumen[rows[j]] + vessels.wall[rows[j]] / 2
        spots.append(axis + radial * r[:, None])
        frames.append(np.stack([tangent, np.cross(radial, tangent), radial], axis=2))
    if not spots:
        return empty_cells()
    centre, rotation = np.concatenate(spots), np.concatenate(frames)
    # Not where another capillary's lumen opens into this one's wall.
    return flat_nuclei(ENDOTHELIUM_CLASS, centre, rotation, conf, fib, scale, section, rng,
                       vessel_parts(vessels, centre) == VESSEL_WALL)


def endothelial(cells: Cells, vessels: Vessels) -> np.ndarray:
    """(N,) bool: the nuclei of ``cells`` that lie in a capillary wall (their centres are inside the
    tube, which every other nucleus keeps clear of)."""
    return (cells.cls == CLASS_IDS[ENDOTHELIUM_CLASS]) & (vessel_clearance(vessels, cells.centre, 0.0) < 0)
