"""Epithelium: crypts lined with columnar nuclei and goblet mucin, and the surface epithelium.

Crypt cells sit on a grid over each crypt wall (rows along the crypt profile, columns around the
axis), surface cells on a grid under the luminal surface; neighbours stand side by side with
parallel long axes and are never wider than the room between them, so nuclei cannot overlap by
construction. Nuclei sit at the base, some raised (pseudo-stratification); goblet cells keep a
flattened basal nucleus under a mucin vacuole that reaches the lumen. Only cells that can reach the
slab are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..classes import CLASS_IDS
from ..config import CellTypeConf, EpitheliumConf
from .architecture import axis_point, crypt_coordinates, lumen_factor, scene_box, surface_depth, wall_factor
from .cells import bounding_radius, draw_shapes, make_cells
from .geometry import frames_from_axis
from .model import Cells, Crypts, Ellipsoids, Section

GOBLET_SQUASH = (0.6, 1.15)  # goblet nuclei: shorter and wider, pressed to the base


@dataclass(frozen=True)
class _Wall:
    """Grid points on the crypt walls, ``inset`` inside the basal surface."""

    crypt: np.ndarray  # (P,) crypt index
    theta: np.ndarray  # (P,) angle about the axis
    anchor: np.ndarray  # (P, 3) point on the axis (or centre of the rounded end) the normal starts from
    normal: np.ndarray  # (P, 3) outward unit normal
    arc: np.ndarray  # (P,) distance to the nearer ring neighbour at the nominal inset radius
    goblet: np.ndarray  # (P,) bool: a goblet cell
    goblet_arc: np.ndarray  # (P,) distance between the goblets of the ring at the inset radius


def _wall_grid(crypts: Crypts, epi: EpitheliumConf, inset: float, rng: np.random.Generator) -> _Wall:
    """Cells on every crypt wall; goblets evenly spread around each ring (the "flower" of a
    cross-section), their number per ring rounded at random to keep the goblet fraction."""
    parts = []
    spacing = epi.spacing_um
    for c in range(len(crypts.centre)):
        rho = crypts.radius[c] - inset
        total = crypts.depth + np.pi / 2 * rho
        s = np.arange(rng.uniform(0, epi.row_spacing_um), total, epi.row_spacing_um)
        alpha = np.clip((s - crypts.depth) / rho, 0, None)  # angle on the rounded end
        ring = np.maximum(1, np.floor(2 * np.pi * rho * np.cos(alpha) / spacing)).astype(int)
        row = np.repeat(np.arange(len(s)), ring)
        col = np.arange(len(row)) - np.repeat(np.cumsum(ring) - ring, ring)
        jitter = rng.uniform(-0.15, 0.15, len(row))
        phase = rng.uniform(0, 2 * np.pi, len(s))
        want = epi.goblet_fraction * ring
        n_goblet = np.floor(want + rng.random(len(s))).astype(int)
        offset = rng.random(len(s))
        goblet = np.zeros(len(row), bool)
        for r in np.nonzero(n_goblet)[0]:
            cols = np.floor((np.arange(n_goblet[r]) + offset[r]) * ring[r] / n_goblet[r]).astype(int)
            goblet[np.cumsum(ring)[r] - ring[r] + cols] = True
        theta = 2 * np.pi * (col + jitter) / ring[row] + phase[row]
        w_anchor = np.minimum(s, crypts.depth)[row]
        a = alpha[row]
        idx = np.full(len(row), c)
        anchor = np.column_stack([axis_point(crypts, idx, w_anchor), w_anchor])
        normal = np.column_stack([np.cos(a) * np.cos(theta), np.cos(a) * np.sin(theta), np.sin(a)])
        nominal = (2 * np.pi * rho * np.cos(alpha) / ring)[row]
        # The jitter brings ring neighbours closer than the nominal arc: each cell gets its nearer gap.
        first = np.repeat(np.cumsum(ring) - ring, ring)
        after = jitter[first + (col + 1) % ring[row]] - jitter
        before = jitter - jitter[first + (col - 1) % ring[row]]
        arc = nominal * (1 + np.minimum(after, before))
        goblet_arc = nominal * ring[row] / np.maximum(n_goblet[row], 1)
        parts.append((idx, theta, anchor, normal, arc, goblet, goblet_arc))
    return _Wall(*(np.concatenate(p) for p in zip(*parts)))


def _surface_grid(crypts: Crypts, section: Section, spacing: float, reach: float,
                  tree: cKDTree) -> Tuple[np.ndarray, np.ndarray]:
    """Hexagonal grid of surface-epithelium cells near the slab, away from the crypt mouths.

    Returns their basal anchors (P, 3) in tissue coordinates and their luminal normals (P, 3).
    """
    lo, hi = scene_box(section, reach)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    q = section.to_tissue(corners)
    if q[:, 2].min() > crypts.surface + reach + np.abs(crypts.surface_waves[:, 3]).sum():
        return np.zeros((0, 3)), np.zeros((0, 3))
    (umin, vmin), (umax, vmax) = q[:, :2].min(0) - reach, q[:, :2].max(0) + reach
    dv = spacing * np.sqrt(3) / 2
    rows = np.arange(np.floor(vmin / dv), np.ceil(vmax / dv) + 1)
    cols = np.arange(np.floor(umin / spacing) - 1, np.ceil(umax / spacing) + 1)
    jj, ii = np.meshgrid(rows, cols, indexing="ij")
    uv = np.stack([(ii + 0.5 * (jj % 2)) * spacing, jj * dv], -1).reshape(-1, 2)
    base = surface_depth(crypts, uv) + crypts.surface
    anchor = np.column_stack([uv, base])
    _, rho, _, basal, _ = crypt_coordinates(crypts, anchor, tree)
    keep = rho > basal + spacing  # the crypt epithelium lines the mouths
    normal = np.tile([0.0, 0.0, -1.0], (int(keep.sum()), 1))
    return anchor[keep], normal


def _nuclei(nucleus: CellTypeConf, scale: float, goblet: np.ndarray, rng: np.random.Generator,
            ) -> Dict[str, np.ndarray]:
    """Shapes of plain and goblet nuclei, from one stream so each cell keeps its draw."""
    n = len(goblet)
    shapes = draw_shapes(nucleus, scale, n, rng)
    squashed = draw_shapes(nucleus, scale, n, rng, squash=GOBLET_SQUASH)
    for key in shapes:
        shapes[key][goblet] = squashed[key][goblet]
    return shapes


def _fit_width(shapes: Dict[str, np.ndarray], room: np.ndarray, noise: float) -> None:
    """Narrow nuclei to ``room`` (the distance to their neighbours at their innermost position)."""
    max_semi = np.maximum(room - 0.3, 1.0) / (2 * (1 + noise))
    shapes["lobe_axes"][:, 0, 1:] *= np.minimum(1, max_semi / shapes["lobe_axes"][:, 0, 1])[:, None]


def build_epithelium(crypts: Crypts, section: Section, tree: cKDTree, epi: EpitheliumConf,
                     nucleus: CellTypeConf, scale: float, rng_place: np.random.Generator,
                     rng_shape: np.random.Generator, rng_goblet: np.random.Generator,
                     ) -> Tuple[Cells, Ellipsoids]:
    """Epithelial cells (class EPI) of crypts and surface, and goblet mucin vacuoles, near the slab."""
    mean_len = np.mean(nucleus.length_um) * scale
    inset = epi.basal_gap_um + mean_len / 2
    wall = _wall_grid(crypts, epi, inset, rng_place)
    idx, theta, n = wall.crypt, wall.theta, len(wall.crypt)
    goblet = wall.goblet
    shapes = _nuclei(nucleus, scale, goblet, rng_shape)
    half_len = shapes["lobe_axes"][:, 0, 0]
    raised = np.where(goblet, 0.0, rng_place.uniform(0, epi.stratification_um, n))
    basal = crypts.radius[idx] * wall_factor(crypts, idx, theta)
    centre_radius = basal - epi.basal_gap_um - half_len - raised
    innermost = np.maximum(basal - epi.basal_gap_um - half_len - epi.stratification_um, 1.0)
    room = np.minimum(wall.arc * innermost / (crypts.radius[idx] - inset), epi.row_spacing_um)
    _fit_width(shapes, room, nucleus.shape_noise)
    centre_t = wall.anchor + wall.normal * centre_radius[:, None]
    # At the crypt mouths the undulating luminal surface can lie below the top rows: leave out the
    # cells whose nucleus would reach above it (checked at its centre and at both ends).
    noise = 1 + nucleus.shape_noise
    reach_w = np.hypot(half_len * wall.normal[:, 2], shapes["lobe_axes"][:, 0, 1]) * noise
    surface = np.max([surface_depth(crypts, (centre_t + wall.normal * (k * half_len * noise)[:, None])[:, :2])
                      for k in (-1, 0, 1)], axis=0)
    below = centre_t[:, 2] - reach_w > surface

    # Mucin vacuoles fill the space between a goblet nucleus and the lumen, as wide as the room
    # between neighbouring goblets allows (thin cytoplasm strands stay between them).
    lumen = crypts.lumen[idx] * wall_factor(crypts, idx, theta) * lumen_factor(crypts, idx, theta)
    top = centre_radius - half_len - 0.6  # luminal end of the nucleus, small gap
    want = rng_goblet.uniform(*epi.goblet_length_um, size=n)
    length = np.minimum(want, top - lumen + 1.0)  # vacuoles may bulge slightly into the lumen
    vac_radius = top - length / 2
    room_goblet = epi.goblet_fill * wall.goblet_arc * np.maximum(vac_radius, 1.0) / (crypts.radius[idx] - inset)
    width = np.minimum(rng_goblet.uniform(*epi.goblet_width_um, size=n), room_goblet)
    vac_centre_t = wall.anchor + wall.normal * vac_radius[:, None]
    vac_axes = np.column_stack([length / 2, width / 2, width / 2 * 0.95])
    has_vacuole = goblet & (length > 1.0)

    # Surface epithelium: columnar cells standing on the base of the surface layer.
    anchor_s, normal_s = _surface_grid(crypts, section, epi.row_spacing_um, mean_len * 2, tree)
    m = len(anchor_s)
    shapes_s = _nuclei(nucleus, scale, np.zeros(m, bool), rng_shape)
    _fit_width(shapes_s, np.full(m, epi.row_spacing_um), nucleus.shape_noise)
    lift = epi.basal_gap_um + shapes_s["lobe_axes"][:, 0, 0] + rng_place.uniform(0, epi.stratification_um, m)
    centre_s = anchor_s + normal_s * lift[:, None]

    centre = section.to_section(np.concatenate([centre_t, centre_s]))
    axis = np.concatenate([wall.normal, normal_s]) @ section.rotation  # long axis along the normal
    rotation = frames_from_axis(axis, rng_shape)
    shapes = {k: np.concatenate([shapes[k], shapes_s[k]]) for k in shapes}
    goblet_all = np.concatenate([goblet, np.zeros(m, bool)])

    lo, hi = scene_box(section, 0)
    keep = _reaches(centre, bounding_radius(shapes, nucleus.shape_noise), lo, hi)
    keep[:n] &= below
    vac_centre = section.to_section(vac_centre_t)
    keep_vac = has_vacuole & below & _reaches(vac_centre, vac_axes.max(1), lo, hi)
    cells = make_cells(np.full(int(keep.sum()), CLASS_IDS["EPI"]), centre[keep], rotation[keep],
                       {k: v[keep] for k, v in shapes.items()}, goblet_all[keep])
    mucin = Ellipsoids(centre=vac_centre[keep_vac], rotation=rotation[:n][keep_vac], axes=vac_axes[keep_vac])
    return cells, mucin


def _reaches(centre: np.ndarray, reach: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Objects whose bounding sphere touches the box [lo, hi] (z: the slab)."""
    return np.all((centre + reach[:, None] >= lo) & (centre - reach[:, None] <= hi), axis=1)
