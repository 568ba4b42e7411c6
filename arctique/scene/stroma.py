"""Lamina propria population: stroma cells at configured densities, never overlapping.

Per type the target count is ``density * ratio * stroma volume`` of the region from which a cell
of that type can reach the slab; candidates are drawn uniformly there and accepted greedily when
its nucleus clears the crypt walls and every nucleus placed before (large types first).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List

import numpy as np
from scipy.spatial import cKDTree

from ..config import CellsConf
from .architecture import compartments, scene_box, wall_clearance
from .cells import bounding_radius, collision_spheres, draw_shapes
from .geometry import random_rotations
from .model import STROMA, Crypts, Section

logger = logging.getLogger(__name__)

PLACEMENT_ORDER = ("FIB", "EOS", "PLA", "NEU", "LYM")  # large cells first
_VOLUME_SAMPLES = 20000
_MAX_BATCHES = 25


class _SphereIndex:
    """Spheres placed so far, hashed on a grid for fast overlap queries."""

    def __init__(self, cell: float) -> None:
        self.cell = cell
        self.grid: Dict[tuple, List[int]] = {}
        self.centres: List[np.ndarray] = []
        self.radii: List[float] = []

    def _key(self, p: np.ndarray) -> tuple:
        return tuple(np.floor(p / self.cell).astype(int))

    def collides(self, centres: np.ndarray, radii: np.ndarray, gap: float) -> bool:
        for p, r in zip(centres, radii):
            k = self._key(p)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dz in (-1, 0, 1):
                        for j in self.grid.get((k[0] + dx, k[1] + dy, k[2] + dz), ()):
                            if np.sum((self.centres[j] - p) ** 2) < (self.radii[j] + r + gap) ** 2:
                                return True
        return False

    def add(self, centres: np.ndarray, radii: np.ndarray) -> None:
        for p, r in zip(centres, radii):
            self.grid.setdefault(self._key(p), []).append(len(self.centres))
            self.centres.append(p)
            self.radii.append(float(r))


def stroma_volume(section: Section, crypts: Crypts, tree: cKDTree, z_pad: float,
                  rng: np.random.Generator) -> float:
    """Monte-Carlo volume (um^3) of stroma in the region within ``z_pad`` of the slab."""
    lo, hi = scene_box(section, z_pad)
    p = rng.uniform(lo, hi, size=(_VOLUME_SAMPLES, 3))
    frac = np.mean(compartments(p, section, crypts, tree) == STROMA)
    return float(frac * np.prod(hi - lo))


def build_stroma(conf: CellsConf, section: Section, crypts: Crypts, tree: cKDTree,
                 streams: Callable[[str], np.random.Generator]) -> Dict[str, np.ndarray]:
    """Stroma cells (all types) as columns of ``model.Cells`` plus ``cls_name`` (type names)."""
    total = sum(conf.ratios.values())
    index = _SphereIndex(cell=8.0)
    columns: List[Dict[str, np.ndarray]] = []
    for name in PLACEMENT_ORDER:
        ratio = conf.ratios.get(name, 0.0) / total
        if ratio <= 0 or conf.stroma_density <= 0:
            continue
        tconf = getattr(conf.types, name)
        scale = conf.nucleus_scale.get(name, 1.0)
        rng = streams(f"stroma/{name}")
        probe = draw_shapes(tconf, scale, 64, streams(f"stroma/{name}/probe"))
        z_pad = float(bounding_radius(probe, tconf.shape_noise).mean())
        volume = stroma_volume(section, crypts, tree, z_pad, streams(f"stroma/{name}/volume"))
        target = int(round(conf.stroma_density * ratio * volume / 1000))
        placed = _place(tconf, scale, target, z_pad, section, crypts, tree, index, conf.min_gap_um, rng)
        if len(placed["centre"]) < target:
            logger.warning("stroma %s: placed %d of %d cells (no room left)", name, len(placed["centre"]), target)
        placed["cls_name"] = np.array([name] * len(placed["centre"]))
        columns.append(placed)
    if not columns:
        return {}
    return {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}


def _place(tconf, scale, target, z_pad, section, crypts, tree, index: _SphereIndex, gap: float,
           rng: np.random.Generator) -> Dict[str, np.ndarray]:
    lo, hi = scene_box(section, z_pad)
    accepted: List[Dict[str, np.ndarray]] = []
    count = 0
    for _ in range(_MAX_BATCHES):  # until the target is met or the space is full
        m = max(4 * (target - count), 64)
        shapes = draw_shapes(tconf, scale, m, rng)
        centre = rng.uniform(lo, hi, size=(m, 3))
        rotation = random_rotations(rng, m)
        # Nuclei keep clear of the epithelium and of each other; cell bodies may touch and
        # overlap, as cytoplasm does in the packed lamina propria.
        owner, sc, sr = collision_spheres(centre, rotation, shapes, tconf.shape_noise)
        ok_wall = np.ones(m, bool)
        np.logical_and.at(ok_wall, owner, wall_clearance(sc, section, crypts, tree) >= sr + gap)
        reach = bounding_radius(shapes, tconf.shape_noise)
        in_slab = (centre[:, 2] - reach <= section.z1) & (centre[:, 2] + reach >= section.z0)
        starts = np.searchsorted(owner, np.arange(m))
        ends = np.searchsorted(owner, np.arange(m), side="right")
        take = np.zeros(m, bool)
        for i in np.nonzero(ok_wall & in_slab)[0]:
            if count >= target:
                break
            s, e = starts[i], ends[i]
            if not index.collides(sc[s:e], sr[s:e], gap):
                index.add(sc[s:e], sr[s:e])
                take[i] = True
                count += 1
        accepted.append({"centre": centre[take], "rotation": rotation[take],
                         **{k: v[take] for k, v in shapes.items()}})
        if count >= target:
            break
    return {k: np.concatenate([a[k] for a in accepted]) for k in accepted[0]}
