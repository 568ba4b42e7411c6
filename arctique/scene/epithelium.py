"""Epithelium: crypts lined with columnar nuclei and goblet mucin, and the surface epithelium.

Crypt cells sit on a grid over each crypt wall (rows along the crypt profile, columns around the
axis, alternate columns moved along it: a brick pattern; every cell moved a little off it: a
mosaic), surface cells on a jittered grid under the luminal surface; neighbours stand side by
side with parallel long axes and are never wider than the room to the nearest of them, so nuclei
cannot overlap by construction. Nuclei sit at the base, some raised (pseudo-stratification);
goblet cells keep a flattened basal nucleus under a mucin vacuole that reaches the lumen. Only
cells that can reach the slab are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..classes import CLASS_IDS
from ..config import CellTypeConf, EpitheliumConf
from .architecture import (axis_point, crypt_coordinates, lumen_factor, scene_box, surface_depth, vacuole_reach,
                           wall_factor)
from .cells import bounding_radius, form_columns, make_cells, noise_terms, shape_draws
from .geometry import rolled_frames
from .model import Cells, Crypts, Section, Vacuoles

GOBLET_SQUASH = (0.6, 1.15)  # goblet nuclei: shorter and wider, pressed to the base
# Bounds of a cell's bounding sphere per um of its longest nucleus (``_near_rings``): the nucleus
# reaches less than 1.18 (1 + shape noise) of it (six lobes on their widest arc; one lobe widened
# by the goblet squash), its body 1.52 times the cytoplasm scale (bent along the eccentricity);
# both doubled.
CELL_REACH = 2.4
BODY_REACH = 3.1
# Surface cells move off their hexagonal grid by up to this share of the row spacing, in any
# direction; neighbours keep at least 1 - 2 x that share of it between them.
SURFACE_JITTER = 0.14


@dataclass(frozen=True)
class _Wall:
    """Grid points on the crypt walls, ``inset`` inside the basal surface."""

    crypt: np.ndarray  # (P,) crypt index
    theta: np.ndarray  # (P,) angle about the axis
    anchor: np.ndarray  # (P, 3) point on the axis (or centre of the rounded end) the normal starts from
    normal: np.ndarray  # (P, 3) outward unit normal
    alpha: np.ndarray  # (P,) angle of the normal on the rounded end (0 on the tube)
    arc: np.ndarray  # (P,) distance to the nearer ring neighbour at the nominal inset radius
    # (P, K) offsets to each cell's neighbours (``_neighbour_offsets``; inf: no such neighbour):
    near_arc: np.ndarray  # around the wall, at the nominal inset radius
    near_along: np.ndarray  # along the crypt
    goblet: np.ndarray  # (P,) bool: a goblet cell
    cup_theta: np.ndarray  # (P,) angle of a goblet's theca (NaN for other cells)
    pitch: np.ndarray  # (P,) a goblet's angle to the nearer of its ring neighbours (others: the mean)
    neighbours: np.ndarray  # (P, 2) the ring neighbours before and after
    row: np.ndarray  # (P,) index of the cell's ring, unique over all crypts
    rows: np.ndarray  # (P, 2) first and last index of the cells of the ring before and after


def _ring_items(counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings of ``counts`` items, stored one ring after another: each item's ring, the index of its
    ring's first item and its place in the ring."""
    ring = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return ring, first, np.arange(len(ring)) - first


def _nearer_gap(offset: np.ndarray, first: np.ndarray, place: np.ndarray, count: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items of rings at (place + offset) pitches (``_ring_items``): the indices of each item's ring
    neighbours before and after it, and its gap to the nearer of them, in pitches."""
    before = first + (place - 1) % count
    after = first + (place + 1) % count
    return before, after, 1 + np.minimum(offset[after] - offset, offset - offset[before])


def _wall_grid(crypts: Crypts, epi: EpitheliumConf, inset: float, rng: np.random.Generator) -> _Wall:
    """Cells on every crypt wall. Goblets sit at near-equal angles around each ring, each moved by up
    to half ``goblet_jitter`` of the angle between goblets (0: equal angles, the "flower" of a
    cross-section), turned by ``goblet_stagger`` of a goblet from those of the previous ring (0: in
    columns along the crypt, so that the thecae of a cross-section keep their place through the
    slab's depth): the goblet is the cell nearest to each such angle, its theca is centred on the
    angle itself and spans ``goblet_fill`` of the nearer angle to its neighbours."""
    parts = []
    spacing = epi.spacing_um
    start = n_rows = 0
    for c in range(len(crypts.centre)):
        rho = crypts.radius[c] - inset
        total = crypts.depth + np.pi / 2 * rho
        s = np.arange(rng.uniform(0, epi.row_spacing_um), total, epi.row_spacing_um)
        alpha = np.clip((s - crypts.depth) / rho, 0, None)  # angle on the rounded end
        circumference = 2 * np.pi * rho * np.cos(alpha)  # of each ring, at the inset radius
        ring = np.maximum(1, np.floor(circumference / spacing)).astype(int)
        row, first, col = _ring_items(ring)
        jitter = epi.ring_jitter * rng.uniform(-1, 1, len(row))
        phase = rng.uniform(0, 2 * np.pi, len(s))
        # With staggered columns the rings of the tube (all of one cell count) share the first one's
        # phase, so that a moved column lies between its neighbouring columns.
        tube = s <= crypts.depth
        if epi.column_offset > 0:
            phase[tube] = phase[0]
        goblet_phase = rng.uniform(0, 2 * np.pi)
        n_goblet = np.where(epi.goblet_fraction > 0, np.maximum(1, np.round(epi.goblet_fraction * ring)), 0)
        n_goblet = n_goblet.astype(int)
        goblet = np.zeros(len(row), bool)
        cup_theta = np.full(len(row), np.nan)
        # Each ring's goblet angles, and the cell nearest to each (two angles may share a cell: the first counts).
        g_ring, first_g, g_k = _ring_items(n_goblet)
        gap = 2 * np.pi / n_goblet[g_ring]
        shift = epi.goblet_jitter * rng.uniform(-0.5, 0.5, len(g_ring))
        angles = goblet_phase + gap * (g_k + epi.goblet_stagger * (g_ring % 2) + shift)
        # A goblet's pitch is the nearer of the angles to the goblets before and after it in its ring.
        room = gap * _nearer_gap(shift, first_g, g_k, n_goblet[g_ring])[2]
        cols = np.round((angles - phase[g_ring]) * ring[g_ring] / (2 * np.pi)).astype(int) % ring[g_ring]
        cell = (np.cumsum(ring) - ring)[g_ring] + cols
        cell, j = np.unique(cell, return_index=True)
        goblet[cell] = True
        cup_theta[cell] = angles[j]
        pitch = 2 * np.pi / np.maximum(n_goblet, 1)[row]
        pitch[cell] = room[j]
        theta = 2 * np.pi * (col + jitter) / ring[row] + phase[row]
        # Odd columns move along the crypt by column_offset of a row, where the next ring is on the
        # tube too (the rounded end's rings hold fewer cells, at their own phases: no columns there).
        # Every cell there moves along it by up to row_jitter of a row, either way.
        movable = (s + epi.row_spacing_um <= crypts.depth)[row]
        moved = np.where(movable & (col % 2 == 1), epi.column_offset * epi.row_spacing_um, 0.0)
        moved += np.where(movable, epi.row_jitter * epi.row_spacing_um * rng.uniform(-1, 1, len(row)), 0.0)
        along = np.maximum(s[row] + moved, 0.0)  # distance along the crypt's profile
        w_anchor = np.minimum(along, crypts.depth)
        a = alpha[row]
        idx = np.full(len(row), c)
        anchor = np.column_stack([axis_point(crypts, idx, w_anchor), w_anchor])
        normal = np.column_stack([np.cos(a) * np.cos(theta), np.cos(a) * np.sin(theta), np.sin(a)])
        nominal = (circumference / ring)[row]
        # The jitter brings ring neighbours closer than the nominal arc: each cell gets its nearer gap.
        before_i, after_i, nearer = _nearer_gap(jitter, first, col, ring[row])
        arc = nominal * nearer
        near_arc, near_along = _neighbour_offsets(theta, along, ring, row, col, circumference)
        lo = np.cumsum(ring) - ring  # first cell of each ring
        rows = np.column_stack([lo[np.maximum(row - 1, 0)], (lo + ring)[np.minimum(row + 1, len(s) - 1)] - 1])
        parts.append((idx, theta, anchor, normal, a, arc, near_arc, near_along, goblet, cup_theta, pitch,
                      np.column_stack([before_i, after_i]) + start, row + n_rows, rows + start))
        start += len(row)
        n_rows += len(s)
    return _Wall(*(np.concatenate(p) for p in zip(*parts)))


def _neighbour_offsets(theta: np.ndarray, along: np.ndarray, ring: np.ndarray, row: np.ndarray,
                       col: np.ndarray, circumference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Offsets (P, K) from each cell of one crypt's rings (``_ring_items``) to its neighbours, around
    the wall (arc at the ring's ``circumference``) and along the crypt's profile (``along``): the
    cells up to two columns either side in its own ring and, where the ring before or after holds as
    many cells (the tube's columns), in that ring; inf where there is none. Other rings lie at least
    a row apart along the profile."""
    arcs, alongs = [], []
    lo, own = np.cumsum(ring) - ring, np.arange(len(row))  # first cell of each ring; each cell's index
    for d_row in (-1, 0, 1):
        other = np.clip(row + d_row, 0, len(ring) - 1)
        columns = (other == row + d_row) & (ring[other] == ring[row])
        for d_col in range(-2, 3):
            j = np.where(columns, lo[other] + (col + d_col) % ring[row], own)
            ok = j != own
            turn = np.abs((theta[j] - theta + np.pi) % (2 * np.pi) - np.pi)
            arcs.append(np.where(ok, turn / (2 * np.pi) * circumference[row], np.inf))
            alongs.append(np.where(ok, np.abs(along[j] - along), np.inf))
    return np.column_stack(arcs), np.column_stack(alongs)


def _surface_cells(crypts: Crypts, section: Section, spacing: float, reach: float,
                   tree: cKDTree, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Surface-epithelium cells near the slab, away from the crypt mouths: a hexagonal grid of
    ``spacing`` with every cell moved by up to ``SURFACE_JITTER`` of it (seen en face, no rows).

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
    angle, radius = rng.uniform(0, 2 * np.pi, len(uv)), SURFACE_JITTER * spacing * np.sqrt(rng.random(len(uv)))
    uv += radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    base = surface_depth(crypts, uv) + crypts.surface
    anchor = np.column_stack([uv, base])
    _, rho, _, basal, _ = crypt_coordinates(crypts, anchor, tree)
    keep = rho > basal + spacing  # the crypt epithelium lines the mouths
    normal = np.tile([0.0, 0.0, -1.0], (int(keep.sum()), 1))
    return anchor[keep], normal


@dataclass(frozen=True)
class _NucleusDraws:
    """The shape draws of plain and goblet nuclei, from one stream so each cell keeps its draw: every
    cell is drawn twice (``cells.shape_draws``), and a goblet takes the second draw, squashed. The
    draws are made for every cell of the grid, but only those of ``rows`` are kept (of the many
    cells drawn only those near the slab can be kept) and shaped."""

    conf: CellTypeConf
    scale: float
    goblet: np.ndarray  # bool, of ``rows``
    rows: np.ndarray  # ascending rows whose draws are kept
    plain: Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]  # (form, noise) of shape_draws, of ``rows``
    squashed: Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]

    @classmethod
    def draw(cls, conf: CellTypeConf, scale: float, goblet: np.ndarray, rows: np.ndarray,
             rng: np.random.Generator) -> "_NucleusDraws":
        n = len(goblet)
        plain, squashed = (shape_draws(conf, n, rng, rows) for _ in range(2))
        # The form draws come whole from shape_draws: keep the rows' like their noise.
        return cls(conf, scale, goblet[rows], rows, ({k: v[rows] for k, v in plain[0].items()}, plain[1]),
                   ({k: v[rows] for k, v in squashed[0].items()}, squashed[1]))

    def _pick(self, part: int, at: np.ndarray) -> Dict[str, np.ndarray]:
        """Draws ``part`` (0 form, 1 noise) of positions ``at`` in ``rows``: a goblet's from the
        squashed draw, another's from the plain."""
        g = self.goblet[at]
        plain, squashed = self.plain[part], self.squashed[part]
        return {k: np.where(g.reshape(-1, *(1,) * (v.ndim - 1)), squashed[k][at], v[at]) for k, v in plain.items()}

    def shapes(self) -> Dict[str, np.ndarray]:
        """The shape columns (``cells.form_columns``) of ``rows``, goblets squashed."""
        squash = np.where(self.goblet[:, None], GOBLET_SQUASH, 1.0)
        return form_columns(self.conf, self.scale, self._pick(0, np.arange(len(self.rows))), squash)

    def noise(self, at: np.ndarray) -> np.ndarray:
        """The ``noise`` column of positions ``at`` in ``rows``."""
        return noise_terms(self.conf.shape_noise, self._pick(1, at))


def _fit_width(shapes: Dict[str, np.ndarray], room: np.ndarray, noise: float) -> None:
    """Narrow nuclei to ``room`` (the distance to their neighbours at their innermost position)."""
    max_semi = np.maximum(room - 0.3, 1.0) / (2 * (1 + noise))
    shapes["lobe_axes"][:, 0, 1:] *= np.minimum(1, max_semi / shapes["lobe_axes"][:, 0, 1])[:, None]


def build_epithelium(crypts: Crypts, section: Section, tree: cKDTree, epi: EpitheliumConf,
                     nucleus: CellTypeConf, scale: float, rng_place: np.random.Generator,
                     rng_shape: np.random.Generator, rng_goblet: np.random.Generator,
                     ) -> Tuple[Cells, Vacuoles]:
    """Epithelial cells (class EPI) of crypts and surface, and goblet mucin vacuoles, near the slab.

    Every cell of every crypt wall is drawn, so that a cell's draws do not depend on the view; only
    the rings that can reach the slab (``_near_rings``, about a tenth) are shaped and placed."""
    mean_len = np.mean(nucleus.length_um) * scale
    inset = epi.basal_gap_um + mean_len / 2
    wall = _wall_grid(crypts, epi, inset, rng_place)
    n = len(wall.crypt)
    goblet = wall.goblet
    lo, hi = scene_box(section, 0)
    rows = _near_rings(crypts, section, wall, epi, nucleus, scale, lo, hi)
    k = len(rows)
    draws = _NucleusDraws.draw(nucleus, scale, goblet, rows, rng_shape)
    raised_draw = rng_place.uniform(0, epi.stratification_um, n)
    idx, theta = wall.crypt[rows], wall.theta[rows]
    shapes = draws.shapes()
    half_len = shapes["lobe_axes"][:, 0, 0]
    raised = np.where(goblet[rows], 0.0, raised_draw[rows])
    basal = crypts.radius[idx] * wall_factor(crypts, idx, theta)
    centre_radius = basal - epi.basal_gap_um - half_len - raised
    innermost = np.maximum(basal - epi.basal_gap_um - half_len - epi.stratification_um, 1.0)
    # Nuclear axes, at the innermost radius: the nearest neighbour on the wall, its arc scaled there
    # (rings of other counts lie at least a row away).
    shrink = (innermost / (crypts.radius[idx] - inset))[:, None]
    room = np.minimum(np.hypot(wall.near_arc[rows] * shrink, wall.near_along[rows]).min(axis=1),
                      epi.row_spacing_um)
    _fit_width(shapes, room, nucleus.shape_noise)
    centre_t = wall.anchor[rows] + wall.normal[rows] * centre_radius[:, None]
    noise = 1 + nucleus.shape_noise

    # Goblet mucin: a theca (cup) from inside the nuclear palisade to the lumen, a wedge about the
    # crypt axis spanning ``goblet_fill`` of the angle between goblets less a strand of cytoplasm, and
    # a narrow stem between the neighbouring nuclei down to the goblet's own flattened nucleus.
    top = centre_radius - half_len - 0.6  # luminal end of each nucleus, small gap
    # Only goblets whose mucin can reach the slab (it lies within a crypt radius of the nucleus).
    mucin_near = goblet[rows] & _reaches(section.to_section(centre_t),
                                         np.full(k, crypts.radius.max() + epi.goblet_height_um), lo, hi)
    g = rows[mucin_near]
    cup, stem = _goblet_mucin(crypts, epi, wall, g, _on_wall(top, rows, n), _on_wall(centre_radius, rows, n),
                              _on_wall(shapes["lobe_axes"][:, 0, 1] * noise, rows, n), rng_goblet)
    cup_centre_t = wall.anchor[g] + cup["normal"] * cup["radius"][:, None]
    stem_centre_t = wall.anchor[g] + wall.normal[g] * stem["radius"][:, None]
    vac_centre_t = np.concatenate([cup_centre_t, stem_centre_t])
    vac_rotation = section.rotation.T @ np.concatenate([cup["frame"], _wall_frame(wall.normal[g], wall.theta[g])])
    vac_axes = np.concatenate([cup["axes"], stem["axes"]])
    vac_taper = np.concatenate([cup["taper"], np.zeros(len(g))])
    has_vacuole = np.concatenate([cup["ok"], stem["ok"]])
    vac_owner = np.concatenate([g, g])

    # Surface epithelium: columnar cells standing on the base of the surface layer.
    anchor_s, normal_s = _surface_cells(crypts, section, epi.row_spacing_um, mean_len * 2, tree, rng_place)
    m = len(anchor_s)
    draws_s = _NucleusDraws.draw(nucleus, scale, np.zeros(m, bool), np.arange(m), rng_shape)
    shapes_s = draws_s.shapes()
    _fit_width(shapes_s, np.full(m, (1 - 2 * SURFACE_JITTER) * epi.row_spacing_um), nucleus.shape_noise)
    lift = epi.basal_gap_um + shapes_s["lobe_axes"][:, 0, 0] + rng_place.uniform(0, epi.stratification_um, m)
    centre_s = anchor_s + normal_s * lift[:, None]

    centre = section.to_section(np.concatenate([centre_t, centre_s]))
    axis = np.concatenate([wall.normal[rows], normal_s]) @ section.rotation  # long axis along the normal
    roll = rng_shape.normal(size=(n + m, 3))  # the roll of each cell's frame, drawn for every cell
    rotation = rolled_frames(axis, np.concatenate([roll[rows], roll[n:]]))
    goblet_all = np.concatenate([goblet[rows], np.zeros(m, bool)])

    reach = [bounding_radius(s, nucleus.shape_noise) for s in (shapes, shapes_s)]
    keep = _reaches(centre, np.concatenate(reach), lo, hi)
    # At the crypt mouths the undulating luminal surface can lie below the top rows: leave out the
    # cells whose nucleus would reach above it (checked at its centre and at both ends), and their
    # mucin. Only cells that reach the slab, or own mucin that may, need the check.
    near = np.union1d(np.flatnonzero(keep[:k]), np.flatnonzero(mucin_near))
    below = np.zeros(n, bool)
    below[rows[near]] = _below_surface(crypts, centre_t[near], wall.normal[rows[near]], half_len[near],
                                       shapes["lobe_axes"][near, 0, 1], noise)
    keep[:k] &= below[rows]
    vac_centre = section.to_section(vac_centre_t)
    mucin = Vacuoles(centre=vac_centre, rotation=vac_rotation, axes=vac_axes, taper=vac_taper,
                     exponent=np.full(len(vac_axes), float(epi.goblet_exponent)),
                     stem=np.repeat([False, True], len(g)))
    keep_vac = has_vacuole & below[vac_owner] & _reaches(vac_centre, vacuole_reach(mucin), lo, hi)
    columns = {key: np.concatenate([shapes[key][keep[:k]], shapes_s[key][keep[k:]]]) for key in shapes}
    columns["noise"] = np.concatenate([draws.noise(np.flatnonzero(keep[:k])), draws_s.noise(np.flatnonzero(keep[k:]))])
    cells = make_cells(np.full(int(keep.sum()), CLASS_IDS["EPI"]), centre[keep], rotation[keep], columns,
                       goblet_all[keep])
    mucin = Vacuoles(**{f.name: getattr(mucin, f.name)[keep_vac] for f in fields(Vacuoles)})
    return cells, mucin


def _near_rings(crypts: Crypts, section: Section, wall: _Wall, epi: EpitheliumConf, nucleus: CellTypeConf,
                scale: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows of the wall grid, ascending, whose ring's anchor lies close enough to the box [lo, hi]
    (section frame) that a cell of the ring, or its goblet mucin, may reach it; whole rings, since
    a goblet's mucin is fitted between its ring neighbours.

    A cell's centre lies within its centre radius (at most the basal radius, the basal gap, half
    the longest nucleus and the stratification) of its ring's anchor. From there its bounding
    sphere (``cells.bounding_radius``) reaches less than ``CELL_REACH`` times the longest nucleus
    plus ``BODY_REACH`` times that times the cytoplasm scale, and mucin is looked for within a
    crypt radius and a theca height."""
    harmonics = np.abs(crypts.wall[..., 0]).sum(-1)
    longest = nucleus.length_um[1] * scale  # squashing only shortens
    centre_radius = float(np.max(crypts.radius * (1 + harmonics), initial=0)) + epi.basal_gap_um \
        + longest / 2 + epi.stratification_um
    cell = longest * (CELL_REACH * (1 + nucleus.shape_noise) + BODY_REACH * nucleus.cytoplasm_scale)
    mucin = float(crypts.radius.max(initial=0)) + epi.goblet_height_um
    reach = centre_radius + max(cell, mucin)
    anchor = section.to_section(wall.anchor)
    return np.flatnonzero(_reaches(anchor, np.full(len(anchor), reach), lo, hi))


def _on_wall(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """``values`` of the wall grid's ``rows`` in an array over all ``n`` cells (NaN elsewhere)."""
    out = np.full(n, np.nan)
    out[rows] = values
    return out


def _below_surface(crypts: Crypts, centre: np.ndarray, normal: np.ndarray, half_len: np.ndarray,
                   half_width: np.ndarray, noise: float) -> np.ndarray:
    """Whether nuclei (tissue frame, long axis along ``normal``) lie below the luminal surface, at
    their centre and at both ends (``noise``: 1 + shape noise)."""
    reach_w = np.hypot(half_len * normal[:, 2], half_width) * noise
    surface = np.max([surface_depth(crypts, (centre + normal * (k * half_len * noise)[:, None])[:, :2])
                      for k in (-1, 0, 1)], axis=0)
    return centre[:, 2] - reach_w > surface


def _wall_frame(normal: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(P, 3, 3) local -> tissue frames: x along the outward normal, y around the crypt, z = x cross y."""
    tangent = np.column_stack([-np.sin(theta), np.cos(theta), np.zeros(len(theta))])
    return np.stack([normal, tangent, np.cross(normal, tangent)], axis=-1)


def _goblet_mucin(crypts: Crypts, epi: EpitheliumConf, wall: _Wall, g: np.ndarray, top: np.ndarray,
                  centre_radius: np.ndarray, half_width: np.ndarray, rng: np.random.Generator,
                  ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Theca and stem of the goblets ``g`` (indices into the wall grid). ``top``: luminal end of each
    cell's nucleus along its normal; ``inner``: innermost reach of each nucleus (shape noise
    included); ``half_width``: greatest half-width of each nucleus."""
    idx = wall.crypt[g]
    theta = wall.cup_theta[g]
    a = wall.alpha[g]
    normal = np.column_stack([np.cos(a) * np.cos(theta), np.cos(a) * np.sin(theta), np.sin(a)])
    f = wall_factor(crypts, idx, theta)
    lumen = crypts.lumen[idx] * f * lumen_factor(crypts, idx, theta, wall.anchor[g, 2])
    half_angle = epi.goblet_fill * wall.pitch[g] / 2
    # The theca reaches down between the nuclei of its ring neighbours (those within its angle plus
    # half a cell), from their luminal ends by ``goblet_reach`` of the way to the middle of the
    # shallowest of them; the stem continues to its own nucleus.
    window = int((wall.rows[:, 1] - wall.rows[:, 0]).max()) + 1
    cand = wall.rows[g, :1] + np.arange(window)
    valid = cand <= wall.rows[g, 1:]
    cand = np.minimum(cand, len(wall.crypt) - 1)
    cell_angle = wall.arc[g] / np.maximum(crypts.radius[idx] * f, 1.0)
    dtheta = (wall.theta[cand] - theta[:, None] + np.pi) % (2 * np.pi) - np.pi
    near = (valid & (wall.row[cand] == wall.row[g, None]) & (cand != g[:, None])
            & (np.abs(dtheta) <= (half_angle + 0.5 * cell_angle)[:, None]))
    depth = top[cand] + epi.goblet_reach * (centre_radius[cand] - top[cand])
    palisade = np.min(np.where(near, depth, np.inf), axis=1)
    outer = np.minimum(palisade, top[g]) - 0.5
    n = len(wall.crypt)  # drawn for every cell, so that a goblet's draw does not depend on the view
    want = rng.uniform(*epi.goblet_length_um, size=n)[g]
    width = rng.uniform(*epi.goblet_width_um, size=n)[g]
    low = np.maximum(lumen - 1.0, outer - want)  # vacuoles may bulge slightly into the lumen
    semi = (outer - low) / 2
    radius = (outer + low) / 2
    # Half-width at distance r from the axis: half_angle * r - strand / 2, so that neighbouring thecae
    # keep strands of even width; at most the drawn width at the outer end.
    slope = np.minimum(half_angle, (width / 2 + epi.goblet_strand_um / 2) / np.maximum(outer, 1.0))
    b = slope * radius - epi.goblet_strand_um / 2
    semi = np.maximum(semi, 0.1)
    # Along the crypt a theca is elliptic: with a height above the row spacing the thecae of one
    # column of goblets (stagger 0) join through a waist, beads on a string along the crypt.
    height = epi.goblet_height_um / 2
    cup = {"normal": normal, "radius": radius, "frame": _wall_frame(normal, theta),
           "axes": np.column_stack([semi, np.maximum(b, 0.1), np.full(len(g), height)]),
           "taper": epi.goblet_taper * slope * semi / np.maximum(b, 0.1), "ok": (semi > 0.5) & (b > 0.2)}
    # The stem: from the theca to the goblet's nucleus, as wide as its ring neighbours leave room;
    # none for thecae that stay apical of the palisade (the narrow base of a goblet holds cytoplasm).
    left, right = wall.neighbours[g].T
    gap = wall.arc[g] * outer / np.maximum(crypts.radius[idx] * f, 1.0)
    stem_half = gap - np.maximum(half_width[left], half_width[right]) - 0.3
    stem_low = np.maximum(outer - 1.0, low)
    stem_semi = (top[g] - stem_low) / 2
    stem = {"radius": (top[g] + stem_low) / 2,
            "axes": np.column_stack([np.maximum(stem_semi, 0.1), np.maximum(stem_half, 0.1),
                                     np.full(len(g), min(height, epi.row_spacing_um / 2))]),
            "ok": (stem_semi > 0.5) & (stem_half > 0.4) & (epi.goblet_reach > 0)}
    return cup, stem


def _reaches(centre: np.ndarray, reach: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Objects whose bounding sphere touches the box [lo, hi] (z: the slab)."""
    return np.all((centre + reach[:, None] >= lo) & (centre - reach[:, None] <= hi), axis=1)
