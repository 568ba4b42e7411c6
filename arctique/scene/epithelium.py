"""Crypt epithelium: columnar nuclei on the basal side, goblet mucin vacuoles on the luminal side.

Cells sit on a regular grid over each crypt wall (rows along the crypt profile, columns around the
axis), so neighbours never overlap by construction; only cells that can reach the slab are kept.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from ..config import CellTypeConf, EpitheliumConf
from .architecture import axis_point, scene_box, wall_factor
from .cells import bounding_radius, draw_shapes
from .geometry import frames_from_axis
from .model import Crypts, Ellipsoids, Section


def _wall_grid(crypts: Crypts, spacing: float, inset: float,
               rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """Grid points on every crypt wall, ``inset`` inside the basal surface.

    Returns ``(crypt index, theta, anchor (P, 3), normal (P, 3), arc (P,))``: the anchor is the
    point on the crypt axis (or the centre of its rounded end) that the outward ``normal`` starts
    from; ``arc`` is the distance to the neighbours of the same ring at the nominal inset radius.
    """
    idx_all, theta_all, anchor_all, normal_all, arc_all = [], [], [], [], []
    for c in range(len(crypts.centre)):
        rho = crypts.radius[c] - inset
        total = crypts.depth + np.pi / 2 * rho
        s = np.arange(rng.uniform(0, spacing), total, spacing)
        alpha = np.clip((s - crypts.depth) / rho, 0, None)  # angle on the rounded end
        ring = np.maximum(1, np.floor(2 * np.pi * rho * np.cos(alpha) / spacing)).astype(int)
        row = np.repeat(np.arange(len(s)), ring)
        col = np.arange(len(row)) - np.repeat(np.cumsum(ring) - ring, ring)
        jitter = rng.uniform(-0.15, 0.15, len(row))
        phase = rng.uniform(0, 2 * np.pi, len(s))  # drawn after the jitter, as before
        theta = 2 * np.pi * (col + jitter) / ring[row] + phase[row]
        w_anchor = np.minimum(s, crypts.depth)[row]
        a = alpha[row]
        idx = np.full(len(row), c)
        anchor = np.column_stack([axis_point(crypts, idx, w_anchor), w_anchor])
        normal = np.column_stack([np.cos(a) * np.cos(theta), np.cos(a) * np.sin(theta), np.sin(a)])
        idx_all.append(idx)
        theta_all.append(theta)
        anchor_all.append(anchor)
        normal_all.append(normal)
        arc_all.append((2 * np.pi * rho * np.cos(alpha) / ring)[row])
    return (np.concatenate(idx_all), np.concatenate(theta_all), np.concatenate(anchor_all),
            np.concatenate(normal_all), np.concatenate(arc_all))


def build_epithelium(crypts: Crypts, section: Section, epi: EpitheliumConf, nucleus: CellTypeConf,
                     scale: float, rng_place: np.random.Generator, rng_shape: np.random.Generator,
                     rng_goblet: np.random.Generator) -> Tuple[Dict[str, np.ndarray], Ellipsoids]:
    """Epithelial cells (class EPI) and goblet mucin vacuoles that can reach the slab."""
    mean_len = np.mean(nucleus.length_um) * scale
    inset = epi.basal_gap_um + mean_len / 2
    idx, theta, anchor, normal, arc = _wall_grid(crypts, epi.spacing_um, inset, rng_place)
    n = len(idx)
    goblet = rng_goblet.random(n) < epi.goblet_fraction
    # Shapes of plain and goblet nuclei come from one stream so each cell keeps its draw.
    shapes = draw_shapes(nucleus, scale, n, rng_shape)
    squashed = draw_shapes(nucleus, scale, n, rng_shape, squash=(0.6, 1.15))
    for key in shapes:
        shapes[key][goblet] = squashed[key][goblet]
    half_len = shapes["lobe_axes"][:, 0, 0]
    basal = crypts.radius[idx] * wall_factor(crypts, idx, theta)
    # Side by side with parallel long axes, nuclei cannot overlap when each is narrower than the
    # distance to its neighbours (measured at the nucleus' own radius) minus a small gap.
    radius_here = np.maximum(basal - epi.basal_gap_um - half_len, 1.0)
    room = np.minimum(arc * radius_here / (crypts.radius[idx] - inset), epi.spacing_um) - 0.3
    max_semi = np.maximum(room, 1.0) / (2 * (1 + nucleus.shape_noise))
    shapes["lobe_axes"][:, 0, 1:] *= np.minimum(1, max_semi / shapes["lobe_axes"][:, 0, 1])[:, None]
    centre_t = anchor + normal * (basal - epi.basal_gap_um - half_len)[:, None]
    centre = section.to_section(centre_t)
    axis_s = normal @ section.rotation  # long axis along the wall normal, in the section frame
    rotation = frames_from_axis(axis_s, rng_shape)

    # Mucin vacuoles fill the space between a goblet nucleus and the lumen.
    lumen = crypts.lumen[idx] * wall_factor(crypts, idx, theta)
    top = basal - epi.basal_gap_um - 2 * half_len - 0.6  # luminal end of the nucleus, small gap
    want = rng_goblet.uniform(*epi.goblet_length_um, size=n)
    length = np.minimum(want, top - lumen + 1.0)  # vacuoles may bulge slightly into the lumen
    width = rng_goblet.uniform(*epi.goblet_width_um, size=n)
    vac_centre_t = anchor + normal * (top - length / 2)[:, None]
    vac_axes = np.column_stack([length / 2, width / 2, width / 2 * 0.95])
    has_vacuole = goblet & (length > 1.0)

    lo, hi = scene_box(section, 0)
    reach = bounding_radius(shapes, nucleus.shape_noise)
    keep = _reaches(centre, reach, lo, hi)
    vac_centre = section.to_section(vac_centre_t)
    keep_vac = has_vacuole & _reaches(vac_centre, vac_axes.max(1), lo, hi)
    cells = {"centre": centre[keep], "rotation": rotation[keep], "goblet": goblet[keep],
             **{k: v[keep] for k, v in shapes.items()}}
    mucin = Ellipsoids(centre=vac_centre[keep_vac], rotation=rotation[keep_vac], axes=vac_axes[keep_vac])
    return cells, mucin


def _reaches(centre: np.ndarray, reach: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Objects whose bounding sphere touches the box [lo, hi] (z: the slab)."""
    return np.all((centre + reach[:, None] >= lo) & (centre - reach[:, None] <= hi), axis=1)

