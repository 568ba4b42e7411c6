"""Lamina propria population: stroma cells at configured densities, never overlapping, and the
flat nuclei that line its surfaces (capillary endothelium, the pericryptal fibroblast sheath).

Per type the target count is ``density * ratio * stroma volume`` of a region around the slab that
the largest cells can reach from; candidates of all types are drawn uniformly there, interleaved in
random order, and accepted when the nucleus clears the crypt walls and every nucleus placed before.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..classes import CLASS_IDS, STROMA_NAMES
from ..config import CellsConf, CellTypeConf, PericryptalConf
from .architecture import axis_point, compartments, scene_box, vessel_clearance, wall_clearance, wall_factor
from .cells import bounding_radius, collision_spheres, draw_shapes, form_columns, make_cells, noise_terms, shape_draws
from .geometry import SphereIndex, random_rotations
from .model import MAX_LOBES, NOISE_TERMS, STROMA, Cells, Crypts, Section, Vessels

logger = logging.getLogger(__name__)

_VOLUME_SAMPLES = 20000
_MAX_BATCHES = 120  # long spindles (FIB) find room only among many candidates once the rest is placed
# A type's batch is sized to its remaining count over its last batch's acceptance rate, within these
# bounds; a type of which a largest batch places at most _FULL_PLACED is left where it is (space full).
_MIN_CANDIDATES, _MAX_CANDIDATES, _FULL_PLACED = 256, 8192, 2


def stroma_volume(section: Section, crypts: Crypts, tree: cKDTree, z_pad: float,
                  rng: np.random.Generator) -> float:
    """Monte-Carlo volume (um^3) of stroma in the region within ``z_pad`` of the slab."""
    lo, hi = scene_box(section, z_pad)
    p = rng.uniform(lo, hi, size=(_VOLUME_SAMPLES, 3))
    frac = np.mean(compartments(p, section, crypts, tree) == STROMA)
    return float(frac * np.prod(hi - lo))


def build_stroma(conf: CellsConf, section: Section, crypts: Crypts, tree: cKDTree,
                 streams: Callable[[str], np.random.Generator], vessels: Optional[Vessels] = None,
                 obstacles: Optional[Cells] = None) -> Cells:
    """Stroma cells of all types (placed in the class registry's order), clear of the capillaries
    (``vessels``) and of the nuclei already placed in their walls (``obstacles``)."""
    vessels = Vessels.empty() if vessels is None else vessels
    total = sum(conf.ratios.values())
    types = [n for n in STROMA_NAMES if conf.ratios.get(n, 0.0) > 0 and conf.stroma_density > 0]
    if not types:
        return empty_cells()
    # All types share one placement region (the largest reach), so that each is uniform in it.
    pads = [bounding_radius(draw_shapes(getattr(conf.types, n), conf.nucleus_scale.get(n, 1.0), 64,
                                        streams(f"stroma/{n}/probe")), getattr(conf.types, n).shape_noise).mean()
            for n in types]
    z_pad = float(max(pads))
    volume = stroma_volume(section, crypts, tree, z_pad, streams("stroma/volume"))
    targets = {n: int(round(conf.stroma_density * conf.ratios[n] / total * volume / 1000)) for n in types}
    placed = _place(conf, targets, z_pad, section, crypts, tree, streams, vessels, obstacles)
    if not placed:
        return empty_cells()
    for n in types:
        got = int(np.sum(placed["cls_name"] == n))
        if got < targets[n]:
            logger.warning("stroma %s: placed %d of %d cells (no room left)", n, got, targets[n])
    # Cells that cannot reach the slab only served as obstacles during placement.
    reach = placed.pop("reach")
    keep = (placed["centre"][:, 2] - reach <= section.z1) & (placed["centre"][:, 2] + reach >= section.z0)
    placed = {k: v[keep] for k, v in placed.items()}
    cls = np.array([CLASS_IDS[n] for n in placed["cls_name"]], np.uint8)
    return make_cells(cls, placed["centre"], placed["rotation"], placed)


def empty_cells() -> Cells:
    shapes = {"lobe_count": np.zeros(0, int), "lobe_centre": np.zeros((0, MAX_LOBES, 3)),
              "lobe_axes": np.zeros((0, MAX_LOBES, 3)), "curvature": np.zeros(0),
              "noise": np.zeros((0, NOISE_TERMS, 6)), "body_centre": np.zeros((0, 3)), "body_axes": np.zeros((0, 3))}
    return make_cells(np.zeros(0, np.uint8), np.zeros((0, 3)), np.zeros((0, 3, 3)), shapes)


def _place(conf: CellsConf, targets: Dict[str, int], z_pad: float, section: Section, crypts: Crypts,
           tree: cKDTree, streams: Callable[[str], np.random.Generator], vessels: Vessels,
           obstacles: Optional[Cells]) -> Dict[str, np.ndarray]:
    """Random sequential placement of all types at once, in an order interleaving the types."""
    lo, hi = scene_box(section, z_pad)
    index = SphereIndex(cell=8.0, period_z=hi[2] - lo[2])
    if obstacles is not None and len(obstacles):
        index.add(*_nucleus_spheres(obstacles), periodic=False)
    rngs = {n: streams(f"stroma/{n}") for n in targets}
    counts = {n: 0 for n in targets}
    rate = {n: 0.25 for n in targets}  # share of a batch's candidates placed (first guess)
    full: set = set()  # types without room left
    accepted: List[Dict[str, np.ndarray]] = []
    for _ in range(_MAX_BATCHES):  # until every target is met or the space is full
        batch, cands, sizes = [], [], {}
        for n, target in targets.items():
            if counts[n] >= target or n in full:
                continue
            rng, tconf = rngs[n], getattr(conf.types, n)
            m = sizes[n] = int(np.clip(2 * (target - counts[n]) / rate[n], _MIN_CANDIDATES, _MAX_CANDIDATES))
            shapes = draw_shapes(tconf, conf.nucleus_scale.get(n, 1.0), m, rng)
            cand = {"centre": rng.uniform(lo, hi, size=(m, 3)), "rotation": random_rotations(rng, m), **shapes}
            order = np.sort(rng.random(m))
            owner, sc, sr = collision_spheres(cand["centre"], cand["rotation"], shapes, tconf.shape_noise)
            # Nuclei keep clear of each other and of the epithelium; cell bodies may touch and
            # overlap, as cytoplasm does in the packed lamina propria. The nuclei placed so far rule
            # out most candidates of a crowded stroma in one query; the tissue is asked about the rest.
            ok = np.ones(m, bool)
            np.logical_and.at(ok, owner, ~index.hits(sc, sr, conf.min_gap_um))
            ask = ok[owner]
            clear = np.minimum(wall_clearance(sc[ask], section, crypts, tree),
                               vessel_clearance(vessels, sc[ask], 2 * sr.max()))
            np.logical_and.at(ok, owner[ask], clear >= sr[ask] + conf.min_gap_um)
            cand["reach"] = bounding_radius(shapes, tconf.shape_noise)
            cand["cls_name"] = np.array([n] * m)
            bounds = np.searchsorted(owner, np.arange(m + 1))
            batch.extend((order[i], n, len(cands), i, sc[bounds[i]:bounds[i + 1]], sr[bounds[i]:bounds[i + 1]])
                         for i in np.nonzero(ok)[0])
            cands.append(cand)
        if not cands:  # every target met
            break
        batch.sort(key=lambda item: (item[0], item[1]))
        take: List[List[int]] = [[] for _ in cands]
        for _, n, c, i, spheres, radii in batch:
            if counts[n] >= targets[n] or index.collides(spheres, radii, conf.min_gap_um):
                continue
            index.add(spheres, radii)
            counts[n] += 1
            take[c].append(i)
        for n, cand, rows in zip(sizes, cands, take):  # sizes: the batch's types, in the order of cands
            rate[n] = max(len(rows), 1) / sizes[n]
            if len(rows) <= _FULL_PLACED and sizes[n] == _MAX_CANDIDATES:
                full.add(n)
            rows = np.sort(np.asarray(rows, dtype=np.intp))
            accepted.append({k: v[rows] for k, v in cand.items()})
    if not accepted:
        return {}
    return {k: np.concatenate([a[k] for a in accepted]) for k in accepted[0]}


class FlatNucleusSizes(Protocol):
    """Size ranges (um) of flat nuclei: along their surface, across it, and their flat thickness."""

    length_um: Sequence[float]
    width_um: Sequence[float]
    thickness_um: Sequence[float]


def flat_nuclei(cls_name: str, centre: np.ndarray, rotation: np.ndarray, sizes: FlatNucleusSizes,
                fib: CellTypeConf, scale: float, section: Section, rng: np.random.Generator,
                allowed: np.ndarray, obstacles: Optional[Cells] = None) -> Cells:
    """Flat, elongated nuclei at ``centre`` (section frame) in frames ``rotation`` (local x along,
    y across, z the flat axis), one lobe each, sized from ``sizes``; shape noise and appearance are
    those of fibroblasts (``fib``). Every candidate is drawn, but only the ``allowed`` (a mask of the
    centres) are shaped; kept, in order, are those that reach the slab and touch neither a nucleus
    kept before them nor ``obstacles``."""
    n = len(centre)
    shape_conf = replace(fib, lobes=[1, 1], bend_deg=0.0, cytoplasm_scale=0.0, eccentricity=0.0)
    rows = np.flatnonzero(allowed)
    form, noise = shape_draws(shape_conf, n, rng, rows)
    shapes = {**form_columns(shape_conf, scale, {k: v[rows] for k, v in form.items()}),
              "noise": noise_terms(shape_conf.shape_noise, noise)}
    size = np.column_stack([rng.uniform(*sizes.length_um, size=n), rng.uniform(*sizes.width_um, size=n),
                            rng.uniform(*sizes.thickness_um, size=n)])[rows] * scale / 2
    shapes["lobe_axes"][:, 0] = size
    centre, rotation = centre[rows], rotation[rows]
    reach = bounding_radius(shapes, fib.shape_noise)
    keep = (centre[:, 2] - reach <= section.z1) & (centre[:, 2] + reach >= section.z0)
    owner, sc, sr = collision_spheres(centre, rotation, shapes, fib.shape_noise)
    index = SphereIndex(cell=8.0, period_z=None)
    if obstacles is not None and len(obstacles):
        index.add(*_nucleus_spheres(obstacles))
    bounds = np.searchsorted(owner, np.arange(len(rows) + 1))
    for i in np.nonzero(keep)[0]:
        spheres, radii = sc[bounds[i]:bounds[i + 1]], sr[bounds[i]:bounds[i + 1]]
        if index.collides(spheres, radii, 0.0):
            keep[i] = False
            continue
        index.add(spheres, radii)
    kept = np.nonzero(keep)[0]
    cls = np.full(len(kept), CLASS_IDS[cls_name], np.uint8)
    return make_cells(cls, centre[kept], rotation[kept], {k: v[kept] for k, v in shapes.items()})


def build_pericryptal(conf: PericryptalConf, fib: CellTypeConf, scale: float, crypts: Crypts, section: Section,
                      tree: cKDTree, vessels: Vessels, obstacles: Cells, rng: np.random.Generator) -> Cells:
    """The pericryptal fibroblast sheath (class FIB): flat nuclei lying on the outside of the crypt
    tubes, ``gap_um`` off the basement boundary, flat axis radial, long axis at any angle in the wall, at
    ``density`` per 1000 um^2 of tube wall. Every crypt's cells are drawn whatever the view; kept are
    those that reach the slab, clear the epithelium (the surface's too) and the capillaries, and
    touch neither each other nor the ``obstacles`` (endothelial nuclei)."""
    if conf.density <= 0 or len(crypts.centre) == 0:
        return empty_cells()
    area = 2 * np.pi * crypts.radius * crypts.depth
    count = rng.poisson(conf.density * area / 1000)
    idx = np.repeat(np.arange(len(crypts.centre)), count)
    w = rng.uniform(0, crypts.depth, size=len(idx))
    theta = rng.uniform(0, 2 * np.pi, size=len(idx))
    half_thickness = np.mean(conf.thickness_um) * scale / 2
    radius = crypts.radius[idx] * wall_factor(crypts, idx, theta) + conf.gap_um + half_thickness
    # The crypt axis meanders: its local direction, from the axis a micrometre above and below.
    axis = np.column_stack([axis_point(crypts, idx, w + 1) - axis_point(crypts, idx, w - 1), np.full(len(idx), 2.0)])
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    outward = np.column_stack([np.cos(theta), np.sin(theta), np.zeros(len(idx))])
    radial = outward - (outward * axis).sum(1, keepdims=True) * axis
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    # Long axes at any angle in the wall's tangent plane: crescents hugging a crypt cut across,
    # spindles along one cut lengthwise.
    turn = rng.uniform(0, np.pi, size=len(idx))[:, None]
    around = np.cross(radial, axis)
    along = np.cos(turn) * axis + np.sin(turn) * around
    centre_t = np.column_stack([axis_point(crypts, idx, w), w]) + outward * radius[:, None]
    frame_t = np.stack([along, np.cross(radial, along), radial], axis=2)
    centre, rotation = section.to_section(centre_t), section.rotation.T @ frame_t
    # Near the field (within the longest half-length) and the slab; there, centre and both ends clear
    # of the epithelium, the centre clear of the capillaries.
    longest = conf.length_um[1] * scale / 2
    lo, hi = scene_box(section, 2 * longest)  # across the slab: beyond any nucleus' reach
    allowed = np.all((centre[:, :2] + longest >= lo[:2]) & (centre[:, :2] - longest <= hi[:2]), axis=1) & (
        (centre[:, 2] >= lo[2]) & (centre[:, 2] <= hi[2]))
    near = np.flatnonzero(allowed)
    ends = [section.to_section(centre_t[near] + along[near] * k * longest) for k in (-1.0, 1.0)]
    away = np.min([wall_clearance(p, section, crypts, tree) for p in (centre[near], *ends)], axis=0)
    allowed[near] = (away >= conf.gap_um / 2) & (vessel_clearance(vessels, centre[near], 2 * longest) > half_thickness)
    return flat_nuclei("FIB", centre, rotation, conf, fib, scale, section, rng, allowed, obstacles)


def _nucleus_spheres(cells: Cells) -> Tuple[np.ndarray, np.ndarray]:
    """Collision spheres (centres, radii) of placed nuclei, at the largest shape noise among them."""
    shapes = {k: getattr(cells, k) for k in ("lobe_count", "lobe_centre", "lobe_axes", "curvature", "noise",
                                             "body_centre", "body_axes")}
    return collision_spheres(cells.centre, cells.rotation, shapes, np.abs(cells.noise[:, :, 5]).sum(1).max())[1:]
