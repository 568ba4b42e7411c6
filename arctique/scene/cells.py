"""Parametric cell shapes: drawing them per class, their collision spheres, meshes and inside tests.

A nucleus is 1..MAX_LOBES ellipsoidal lobes in the cell's local frame (long axis = local x), each
with the cell's own smooth surface variation, optionally bent about local z; the cell body
(cytoplasm) is an ellipsoid that contains the nucleus.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..config import CellTypeConf
from .geometry import bend, icosphere, surface_noise, unbend
from .model import MAX_LOBES, NOISE_TERMS, Cells

# A sphere chain covers an ellipsoid when neighbours are at most one minor semi-axis apart and
# their radius exceeds the minor semi-axis by this factor (sqrt(1 + 1/4) rounded up).
_CHAIN_RADIUS = 1.12
# Rows of per-cell noise draws made at once by ``shape_draws`` when it keeps only some rows: blocks
# of about 2 MB, which the allocator reuses, where drawing hundreds of thousands of cells at once
# faults in over 100 MB of fresh memory.
_DRAW_BLOCK_ROWS = 16384


def draw_shapes(conf: CellTypeConf, scale: float, n: int, rng: np.random.Generator,
                squash: Tuple[float, float] = (1.0, 1.0)) -> Dict[str, np.ndarray]:
    """Draw ``n`` nuclei (and cell bodies) of one class in local coordinates.

    ``squash`` multiplies (length, width), e.g. for the compressed nuclei of goblet cells.
    Returns the per-cell columns of ``model.Cells`` that describe shape.
    """
    form, noise = shape_draws(conf, n, rng)
    return {**form_columns(conf, scale, form, squash), "noise": noise_terms(conf.shape_noise, noise)}


def shape_draws(conf: CellTypeConf, n: int, rng: np.random.Generator, keep: Optional[np.ndarray] = None,
                ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Every random number of ``n`` cells' shapes, in stream order: those of their form and those of
    their surface noise, one row per cell. The columns are derived separately (``form_columns``,
    ``noise_terms``), so that a caller who keeps few of many cells derives only their rows while its
    stream moves on as if it had made them all. ``keep`` (ascending rows) are the only rows whose
    surface-noise draws, the bulk of them, are returned (all by default): they are drawn a block at
    a time, so that the draws of cells far from the slab never fill memory."""

    def per_cell(draw: Callable[..., np.ndarray], *args: Any, terms: Tuple[int, ...] = (NOISE_TERMS,)) -> np.ndarray:
        if keep is None:
            return draw(*args, size=(n, *terms))
        blocks = []
        for start in range(0, n, _DRAW_BLOCK_ROWS):
            block = draw(*args, size=(min(_DRAW_BLOCK_ROWS, n - start), *terms))
            blocks.append(block[keep[(keep >= start) & (keep < start + len(block))] - start])
        return np.concatenate(blocks) if blocks else np.zeros((0, *terms))

    form = {"length": rng.uniform(*conf.length_um, size=n), "elongation": rng.uniform(*conf.elongation, size=n),
            "flat": rng.uniform(0.8, 1.0, size=n), "lobes": rng.integers(conf.lobes[0], conf.lobes[1] + 1, size=n)}
    noise = {"wave": per_cell(rng.normal, terms=(NOISE_TERMS, 3)),
             "frequency": per_cell(rng.uniform, *conf.shape_frequency),
             "phase": per_cell(rng.uniform, 0, 2 * np.pi),
             "weight": per_cell(rng.uniform, 0.2, 1.0)}
    form["bend"] = rng.uniform(-1, 1, size=n)
    lobed = form["lobes"] > 1
    form["arc"] = np.zeros(n)  # of the lobes of a lobed nucleus
    form["arc"][lobed] = rng.uniform(0, 0.5, size=int(lobed.sum()))
    # The side of its cell body a nucleus is pushed to (0: no body).
    form["side"] = rng.choice([-1, 1], size=n) if conf.cytoplasm_scale > 0 else np.zeros(n, int)
    return form, noise


def form_columns(conf: CellTypeConf, scale: float, form: Dict[str, np.ndarray],
                 squash: Tuple[float, float] | np.ndarray = (1.0, 1.0)) -> Dict[str, np.ndarray]:
    """The shape columns of ``model.Cells`` but ``noise``, from rows of ``shape_draws``.

    ``squash`` multiplies (length, width), of all cells or per cell (``(n, 2)``).
    """
    n = len(form["length"])
    squash = np.broadcast_to(squash, (n, 2))
    length = form["length"] * scale * squash[:, 0]
    elong, flat, lobes = form["elongation"], form["flat"], form["lobes"]
    bend_angle = np.radians(form["bend"] * conf.bend_deg)
    lobe_centre = np.zeros((n, MAX_LOBES, 3))
    lobe_axes = np.zeros((n, MAX_LOBES, 3))
    extent = np.zeros((n, 3))  # overall semi-extent of the nucleus along local x, y, z
    one = lobes == 1
    a1 = length[one] / 2
    b1 = a1 / elong[one] * squash[one, 1]
    lobe_axes[one, 0] = np.column_stack([a1, b1, b1 * flat[one]])
    extent[one] = lobe_axes[one, 0]
    for i in np.nonzero(~one)[0]:
        k = lobes[i]
        gap = 2.5 * conf.shape_noise + 0.08  # relative to the lobe radius: lobes never touch
        r = length[i] / (2 * k + (k - 1) * gap)
        # Lobes sit on a gentle arc in the local xy plane, chord spacing 2r + gap.
        step = r * (2 + gap)
        arc = form["arc"][i]
        angles = (np.arange(k) - (k - 1) / 2) * arc
        radius = step / (2 * np.sin(max(arc, 1e-6) / 2))
        x = radius * np.sin(angles)
        y = radius * (1 - np.cos(angles)) if arc > 1e-6 else np.zeros(k)
        lobe_centre[i, :k] = np.stack([x, y - y.mean(), np.zeros(k)], 1)
        lobe_axes[i, :k] = (r, r * 0.92, r * 0.8 * flat[i])
        extent[i] = (np.abs(x).max() + r, np.abs(y - y.mean()).max() + r, r * 0.8 * flat[i])
    curvature = bend_angle / length
    body_axes = np.zeros((n, 3))
    body_centre = np.zeros((n, 3))
    if conf.cytoplasm_scale > 0:
        # A roundish body: every axis at least the mean nucleus extent times the scale.
        body_axes = np.maximum(extent, extent.mean(1, keepdims=True)) * conf.cytoplasm_scale
        free = body_axes[:, 0] - extent[:, 0] * (1 + conf.shape_noise) - 0.2
        body_centre[:, 0] = -conf.eccentricity * np.maximum(free, 0) * form["side"]
    return {"lobe_count": lobes, "lobe_centre": lobe_centre, "lobe_axes": lobe_axes, "curvature": curvature,
            "body_centre": body_centre, "body_axes": body_axes}


def noise_terms(amplitude: float, noise: Dict[str, np.ndarray]) -> np.ndarray:
    """The ``noise`` column of ``model.Cells`` (``surface_noise`` terms) from rows of ``shape_draws``:
    unit wave vectors, and amplitudes that sum to ``amplitude`` (|variation| <= amplitude everywhere)."""
    wave = noise["wave"] / np.linalg.norm(noise["wave"], axis=2, keepdims=True)
    weight = noise["weight"] * (amplitude / noise["weight"].sum(1, keepdims=True))
    return np.concatenate([wave, noise["frequency"][..., None], noise["phase"][..., None], weight[..., None]], axis=2)


def make_cells(cls: np.ndarray, centre: np.ndarray, rotation: np.ndarray, shapes: Dict[str, np.ndarray],
               goblet: np.ndarray | None = None) -> Cells:
    """A ``Cells`` table from placed ``draw_shapes`` columns (ids are given when tables are joined)."""
    n = len(cls)
    return Cells(
        cell_id=np.zeros(n, np.int32), cls=np.asarray(cls, np.uint8),
        goblet=np.zeros(n, bool) if goblet is None else goblet, centre=centre, rotation=rotation,
        lobe_count=shapes["lobe_count"].astype(np.int32), lobe_centre=shapes["lobe_centre"],
        lobe_axes=shapes["lobe_axes"], curvature=shapes["curvature"], noise=shapes["noise"],
        body_centre=shapes["body_centre"], body_axes=shapes["body_axes"])


def bounding_radius(shapes: Dict[str, np.ndarray], noise_amp: float) -> np.ndarray:
    """Radius around the local origin that contains nucleus and body."""
    lobes = slice(0, int(shapes["lobe_count"].max(initial=1)))  # later lobe slots are zero in every cell
    lobe_reach = (np.linalg.norm(shapes["lobe_centre"][:, lobes], axis=2)
                  + shapes["lobe_axes"][:, lobes].max(2) * (1 + noise_amp))
    body_reach = np.linalg.norm(shapes["body_centre"], axis=1) + shapes["body_axes"].max(1)
    return np.maximum(lobe_reach.max(1), body_reach)


def _chains(centre: np.ndarray, axes: np.ndarray, grow: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spheres that cover ellipsoids (local ``centre`` (E, 3), semi-axes ``axes`` (E, 3), long axis
    local x, grown by ``grow`` (E,)): a round one by one sphere, an elongated one by a chain along x.

    Returns ``(ellipsoid of each sphere, local centres, radii)``.
    """
    a = axes[:, 0] * grow
    minor = np.maximum(axes[:, 1], axes[:, 2]) * grow
    chain = a > 1.3 * minor
    half = a - minor  # the chain's centres span [-half, half], as np.linspace places them
    count = np.where(chain, np.ceil((2 * half) / np.where(chain, minor, 1.0)).astype(int) + 1, 1)
    item = np.repeat(np.arange(len(a)), count)
    k = np.arange(len(item)) - np.repeat(np.cumsum(count) - count, count)
    along = k * ((half - -half) / np.maximum(count - 1, 1))[item] + -half[item]
    last = k == count[item] - 1
    along[last] = half[item[last]]
    along[~chain[item]] = 0.0
    points = centre[item] + np.where(chain[item, None], np.stack([along, np.zeros_like(along), np.zeros_like(along)], 1), 0.0)
    radii = np.where(chain, minor * _CHAIN_RADIUS, a)[item]
    return item, points, radii


def collision_spheres(centre: np.ndarray, rotation: np.ndarray, shapes: Dict[str, np.ndarray],
                      noise_amp: float, body: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spheres (section frame) covering each cell's nucleus, or with ``body`` its whole cell.

    Returns ``(owner, centres, radii)`` with ``owner`` the row of the cell each sphere belongs to.
    """
    n = len(centre)
    if n == 0:
        return np.zeros(0, int), np.zeros((0, 3)), np.zeros(0)
    has_body = shapes["body_axes"][:, 0] > 0 if body else np.zeros(n, bool)
    # The ellipsoids to cover: a cell's body, or each lobe of its nucleus.
    count = np.where(has_body, 1, shapes["lobe_count"])
    cell = np.repeat(np.arange(n), count)
    lobe = np.arange(len(cell)) - np.repeat(np.cumsum(count) - count, count)
    whole = has_body[cell, None]
    centres = np.where(whole, shapes["body_centre"][cell], shapes["lobe_centre"][cell, lobe])
    axes = np.where(whole, shapes["body_axes"][cell], shapes["lobe_axes"][cell, lobe])
    item, local, radii = _chains(centres, axes, np.where(has_body[cell], 1.0, 1 + noise_amp))
    owner = cell[item]
    bent = ~has_body[owner]
    local[bent] = bend(local[bent][:, None], shapes["curvature"][owner[bent]])[:, 0]
    return owner, centre[owner] + np.einsum("kj,kij->ki", local, rotation[owner]), radii


# --------------------------------------------------------------------------------- meshes, inside


Shells = List[Tuple[np.ndarray, np.ndarray]]  # per lobe j: (rows of the cells with more than j lobes, (n, V, 3) vertices)


def nucleus_shells(cells: Cells, level: int, rows: Optional[np.ndarray] = None) -> Shells:
    """The vertices of every nucleus lobe's shell (icosphere of subdivision ``level``, section frame),
    per lobe index, rows ascending. ``rows`` renumbers the cells (their rows in a larger table), so
    shells of two parts of a table can be made apart and joined (``join_shells``)."""
    sphere, _ = icosphere(level)
    rows = np.arange(len(cells)) if rows is None else np.asarray(rows)
    shells = []
    for lobe in range(MAX_LOBES):
        idx = np.nonzero(cells.lobe_count > lobe)[0]
        if len(idx) == 0:
            break
        r = 1 + surface_noise(sphere[None], cells.noise[idx])  # (n, V)
        local = cells.lobe_centre[idx, lobe, None] + sphere[None] * r[..., None] * cells.lobe_axes[idx, lobe, None]
        local = bend(local, cells.curvature[idx])
        shells.append((rows[idx], cells.centre[idx, None] + np.einsum("nij,nvj->nvi", cells.rotation[idx], local)))
    return shells


def join_shells(*parts: Shells) -> Shells:
    """The shells of several parts of one table, per lobe index in row order."""
    joined = []
    for lobe in range(max((len(p) for p in parts), default=0)):
        pieces = [p[lobe] for p in parts if len(p) > lobe]
        rows = np.concatenate([piece[0] for piece in pieces])
        order = np.argsort(rows, kind="stable")
        joined.append((rows[order], np.concatenate([piece[1] for piece in pieces])[order]))
    return joined


def nucleus_mesh(cells: Cells, level: int, shells: Optional[Shells] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed triangle meshes of all nuclei, one shell per lobe (``shells``: their
    ``nucleus_shells``, when made beforehand).

    Returns ``(vertices (V, 3) float64 section frame, faces (F, 3) int32, face_row (F,) int32)``
    where ``face_row`` is the row of the cell in ``cells``.
    """
    _, tris = icosphere(level)
    shells = nucleus_shells(cells, level) if shells is None else shells
    if not shells:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int32), np.zeros(0, np.int32)
    verts, faces, rows = [], [], []
    offset = 0
    for idx, world in shells:
        nv = world.shape[1]
        verts.append(world.reshape(-1, 3))
        faces.append((tris[None] + offset + nv * np.arange(len(idx))[:, None, None]).reshape(-1, 3))
        rows.append(np.repeat(idx, len(tris)))
        offset += nv * len(idx)
    return (np.concatenate(verts), np.concatenate(faces).astype(np.int32),
            np.concatenate(rows).astype(np.int32))


def body_mesh(cells: Cells, level: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed ellipsoid meshes of the cell bodies of cells that have cytoplasm (same layout)."""
    sphere, tris = icosphere(level)
    idx = np.nonzero(cells.body_axes[:, 0] > 0)[0]
    local = cells.body_centre[idx, None] + sphere[None] * cells.body_axes[idx, None]
    world = cells.centre[idx, None] + np.einsum("nij,nvj->nvi", cells.rotation[idx], local)
    nv = len(sphere)
    faces = (tris[None] + nv * np.arange(len(idx))[:, None, None]).reshape(-1, 3)
    return world.reshape(-1, 3), faces.astype(np.int32), np.repeat(idx, len(tris)).astype(np.int32)


def inside_nucleus(points: np.ndarray, cells: Cells, row) -> np.ndarray:
    """Whether section-frame ``points`` (P, 3) lie inside the parametric nucleus of cell ``row`` (one
    row of ``cells``, or one per point)."""
    rows = np.broadcast_to(row, len(points))
    local = np.einsum("pi,pij->pj", points - cells.centre[rows], cells.rotation[rows])
    local = unbend(local[:, None], cells.curvature[rows])[:, 0]
    count = cells.lobe_count[rows]
    amplitude = np.abs(cells.noise[:, :, 5]).sum(1)[rows]  # |surface_noise| never exceeds it
    inside = np.zeros(len(points), bool)
    for lobe in range(int(count.max(initial=0))):
        on = np.flatnonzero(count > lobe)
        q = (local[on] - cells.lobe_centre[rows[on], lobe]) / cells.lobe_axes[rows[on], lobe]
        rho = np.linalg.norm(q, axis=1)
        inside[on[rho <= 1 - amplitude[on]]] = True
        # Only points in the shell that the surface noise can reach need the noise.
        shell = np.flatnonzero((rho > 1 - amplitude[on]) & (rho <= 1 + amplitude[on]))
        direction = q[shell] / np.maximum(rho[shell], 1e-12)[:, None]
        noise = surface_noise(direction[:, None], cells.noise[rows[on[shell]]])[:, 0]
        inside[on[shell]] |= rho[shell] <= 1 + noise
    return inside


def inside_body(points: np.ndarray, cells: Cells, rows: np.ndarray) -> np.ndarray:
    """Whether ``points`` (P, 3) lie inside the cell body (ellipsoid) of cell ``rows`` (P,); false for
    cells without cytoplasm."""
    inside = np.zeros(len(points), bool)
    has = np.flatnonzero(cells.body_axes[rows, 0] > 0)
    r = rows[has]
    local = np.einsum("pi,pij->pj", points[has] - cells.centre[r], cells.rotation[r]) - cells.body_centre[r]
    inside[has] = ((local / cells.body_axes[r]) ** 2).sum(1) <= 1
    return inside
