"""Crypt architecture, section pose and the tissue compartments (stroma, epithelium, lumen, ...).

Crypts are capsules along the tissue w axis whose axis meanders and whose wall is modulated by a few
angular harmonics; all of it is analytic, so compartments can be evaluated at any point without
meshes or booleans.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..config import BloodConf, CryptConf, RipsConf, SectionConf, SurfaceConf
from .geometry import random_rotations
from .model import (BLOOD, EPITHELIUM, LUMEN, MUCIN, NO_VESSEL, OUTSIDE, RIP, STROMA, VESSEL, VESSEL_LUMEN,
                    VESSEL_WALL, Crypts, Ellipsoids, Rips, SceneModel, Section, Vacuoles, Vessels)

WALL_HARMONICS = 3
LUMEN_HARMONICS = 4
LUMEN_MEANDERS = 2  # waves along the crypt of a lumen's width and turn


def _rotation(tilt: float, azimuth: float) -> np.ndarray:
    ca, sa, ct, st = np.cos(azimuth), np.sin(azimuth), np.cos(tilt), np.sin(tilt)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[ct, 0, st], [0, 1, 0], [-st, 0, ct]])
    # The section normal (local z) points to the camera, i.e. towards the luminal surface (-w).
    flip = np.diag([1.0, -1.0, -1.0])
    return rz @ ry @ flip


def sample_section(conf: SectionConf, field_um: float, margin_um: float, spacing_um: float,
                   rng: np.random.Generator) -> Section:
    """Draw slab thickness, depth, tilt and azimuth; the lateral position is uniform over a crypt cell."""
    thickness = float(rng.uniform(*conf.thickness_um))
    depth = float(rng.uniform(*conf.depth_um))
    tilt = float(rng.uniform(*conf.tilt_deg))
    azimuth = float(rng.uniform(0, 360))
    shift = rng.uniform(0, spacing_um, size=2)
    return Section(
        thickness=thickness, z0=-thickness / 2, z1=thickness / 2, depth=depth, tilt_deg=tilt,
        azimuth_deg=azimuth, origin=np.array([shift[0], shift[1], depth]),
        rotation=_rotation(np.radians(tilt), np.radians(azimuth)), field_um=field_um,
        margin_um=margin_um,
    )


def scene_box(section: Section, z_pad: float) -> Tuple[np.ndarray, np.ndarray]:
    """Lower and upper corner (section frame) of the region whose contents can reach the slab."""
    h = section.field_um / 2 + section.margin_um
    return (np.array([-h, -h, section.z0 - z_pad]), np.array([h, h, section.z1 + z_pad]))


def sample_crypts(conf: CryptConf, surface: SurfaceConf, section: Section, z_pad: float,
                  rng: np.random.Generator) -> Crypts:
    """Jittered hexagonal lattice of crypts covering the scene box (in tissue coordinates)."""
    lo, hi = scene_box(section, z_pad)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    q = section.to_tissue(corners)
    reach = conf.spacing_um + conf.radius_um * 2
    umin, vmin = q[:, :2].min(0) - reach
    umax, vmax = q[:, :2].max(0) + reach
    s = conf.spacing_um
    rows = np.arange(np.floor(vmin / (s * np.sqrt(3) / 2)), np.ceil(vmax / (s * np.sqrt(3) / 2)) + 1)
    cols = np.arange(np.floor(umin / s) - 1, np.ceil(umax / s) + 1)
    jj, ii = np.meshgrid(rows, cols, indexing="ij")
    centre = np.stack([(ii + 0.5 * (jj % 2)) * s, jj * s * np.sqrt(3) / 2], -1).reshape(-1, 2)
    n = len(centre)
    # Draw for the full lattice so that a crypt's values do not depend on the view.
    centre = centre + rng.uniform(-1, 1, size=(n, 2)) * conf.spacing_jitter * s
    scale = 1 + rng.uniform(-1, 1, size=n) * conf.radius_jitter
    scale *= _room(centre, conf.radius_um * scale, conf.gap_um)
    warp_amp = rng.uniform(0.3, 1.0, size=(n, 2)) * conf.warp_um
    warp_phase = rng.uniform(0, 2 * np.pi, size=(n, 2))
    amp = rng.uniform(0, 1, size=(n, WALL_HARMONICS)) * conf.wall_roughness / np.arange(1, WALL_HARMONICS + 1)
    phase = rng.uniform(0, 2 * np.pi, size=(n, WALL_HARMONICS))
    lumen_shape = np.column_stack([
        rng.integers(conf.lumen_lobes[0], conf.lumen_lobes[1] + 1, size=n),
        rng.uniform(*conf.lumen_fold, size=n), rng.uniform(0, 2 * np.pi, size=n)])
    return Crypts(
        centre=centre, radius=conf.radius_um * scale, lumen=conf.lumen_radius_um * scale,
        depth=float(conf.depth_um), warp_amp=warp_amp, warp_phase=warp_phase,
        wavelength=float(conf.warp_wavelength_um), wall=np.stack([amp, phase], -1),
        lumen_shape=lumen_shape, surface=float(surface.thickness_um),
        surface_waves=random_waves(rng, 8, surface.wavelength_um, surface.undulation_um / 2),
        # Drawn last, so that the draws before do not depend on it.
        lumen_waves=np.stack([rng.uniform(0, 1, size=(n, LUMEN_HARMONICS)) * conf.lumen_roughness
                              / np.arange(1, LUMEN_HARMONICS + 1),
                              rng.uniform(0, 2 * np.pi, size=(n, LUMEN_HARMONICS))], -1),
        lumen_meander=_lumen_meander(rng, n, conf),
    )


def _lumen_meander(rng: np.random.Generator, n: int, conf: CryptConf) -> np.ndarray:
    """Per crypt ``LUMEN_MEANDERS`` waves along it (``Crypts.lumen_meander``), wavelengths within a
    factor 1.5 of ``lumen_meander_um``; widening and turning each sum to at most ``lumen_meander``
    (of the radius, of a half turn)."""
    size = (n, LUMEN_MEANDERS)
    share = conf.lumen_meander / LUMEN_MEANDERS
    return np.stack([rng.uniform(0, 1, size) * share, rng.uniform(-1, 1, size) * share * np.pi / 2,
                     2 * np.pi / conf.lumen_meander_um * rng.uniform(0.67, 1.5, size),
                     rng.uniform(0, 2 * np.pi, size)], -1)


def _room(centre: np.ndarray, radius: np.ndarray, gap: float) -> np.ndarray:
    """Per crypt, the factor (at most 1) that narrows it so that ``gap`` stays between its wall and
    every neighbour's: each takes the share its tightest pair allows, (d_ij - gap) / (r_i + r_j), so
    that r_i s_i + r_j s_j <= d_ij - gap for every pair."""
    fit = np.ones(len(centre))
    pairs = cKDTree(centre).query_pairs(2 * float(radius.max(initial=0)) + gap, output_type="ndarray")
    if len(pairs):
        i, j = pairs.T
        share = (np.linalg.norm(centre[i] - centre[j], axis=1) - gap) / (radius[i] + radius[j])
        np.minimum.at(fit, i, share)
        np.minimum.at(fit, j, share)
    return np.minimum(fit, 1.0)


def random_waves(rng: np.random.Generator, n: int, wavelength: float, amplitude: float) -> np.ndarray:
    """Rows (kx, ky, phase, amplitude) of an isotropic random field of about unit ``amplitude``:
    random directions, wavelengths within a factor 1.5 of ``wavelength``."""
    direction = rng.uniform(0, 2 * np.pi, n)
    k = 2 * np.pi / wavelength * rng.uniform(0.67, 1.5, n)
    return np.column_stack([np.cos(direction) * k, np.sin(direction) * k, rng.uniform(0, 2 * np.pi, n),
                            amplitude * rng.normal(size=n) * np.sqrt(2 / n)])


def _roughness_waves(rng: np.random.Generator, n: int, wavelength: float, finest: float) -> np.ndarray:
    """``random_waves`` of the octaves below ``wavelength`` down to ``finest`` (0: none), ``n`` per octave,
    each with half the amplitude of the last from 1/2: a rough, self-similar field (about 0.6 spread)."""
    octaves = max(0, int(np.floor(np.log2(wavelength / finest)))) if finest > 0 else 0
    return np.concatenate([np.zeros((0, 4))] + [random_waves(rng, n, wavelength / 2 ** o, 0.5 ** o)
                                                for o in range(1, octaves + 1)])


def wave_field(waves: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Value of a ``random_waves`` field at ``(P, 2)`` points."""
    return np.sin(xy @ waves[:, :2].T + waves[:, 2]) @ waves[:, 3]


def surface_depth(crypts: Crypts, uv: np.ndarray) -> np.ndarray:
    """w of the luminal surface of the mucosa above tissue points ``uv`` (P, 2)."""
    return wave_field(crypts.surface_waves, uv)


def axis_point(crypts: Crypts, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(u, v) of the axis of crypts ``idx`` at depths ``w`` (clamped to the tube)."""
    wc = np.clip(w, 0, crypts.depth)
    arg = 2 * np.pi * wc[..., None] / crypts.wavelength + crypts.warp_phase[idx]
    return crypts.centre[idx] + crypts.warp_amp[idx] * np.sin(arg)


def _harmonics(waves: np.ndarray, first: int, theta: np.ndarray) -> np.ndarray:
    """Sum over the (..., K, 2) rows (amplitude, phase) of ``waves`` of amplitude cos(k theta +
    phase), k = first .. first + K - 1."""
    k = np.arange(first, first + waves.shape[-2])
    return (waves[..., 0] * np.cos(k * theta[..., None] + waves[..., 1])).sum(-1)


def wall_factor(crypts: Crypts, idx: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Angular modulation of crypt radii (1 = round)."""
    return 1 + _harmonics(crypts.wall[idx], 2, theta)


def lumen_factor(crypts: Crypts, idx: np.ndarray, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Folds of the lumen at depth ``w``: relative lumen radius (a star, or a slit for two lobes),
    made uneven by the crypt's lumen waves (the first harmonic moves the lumen off the axis), and
    widened and turned by its meander along the crypt."""
    meander = crypts.lumen_meander[idx]
    wave = meander[..., 2] * np.clip(w, 0, crypts.depth)[..., None] + meander[..., 3]
    widen = 1 + (meander[..., 0] * np.sin(wave)).sum(-1)
    turned = theta - (meander[..., 1] * np.cos(wave)).sum(-1)
    lobes, fold, phase = (crypts.lumen_shape[idx, i] for i in range(3))
    return widen * (1 + fold * np.cos(lobes * turned + phase) + _harmonics(crypts.lumen_waves[idx], 1, turned))


def crypt_coordinates(crypts: Crypts, q: np.ndarray, tree: cKDTree) -> Tuple[np.ndarray, ...]:
    """For tissue points ``q`` (P, 3): nearest crypt, distance to its axis capsule, angle, radii.

    Returns ``(idx, rho, theta, basal_radius, lumen_radius)``; ``rho < lumen`` is lumen,
    ``rho < basal`` epithelium.
    """
    k = min(3, len(crypts.centre))
    _, cand = tree.query(q[:, :2], k=k)
    cand = cand.reshape(len(q), k)
    w = q[:, 2:3]
    axis = axis_point(crypts, cand, np.broadcast_to(w, cand.shape))
    d = q[:, None, :2] - axis
    dw = w - np.clip(w, 0, crypts.depth)
    rho = np.sqrt((d**2).sum(-1) + dw**2)
    theta = np.arctan2(d[..., 1], d[..., 0])
    f = wall_factor(crypts, cand, theta)
    rel = rho / (crypts.radius[cand] * f)
    best = np.argmin(rel, axis=1)
    pick = (np.arange(len(q)), best)
    idx = cand[pick]
    th = theta[pick]
    lumen = crypts.lumen[idx] * f[pick] * lumen_factor(crypts, idx, th, q[:, 2])
    return idx, rho[pick], th, crypts.radius[idx] * f[pick], lumen


def crypt_tree(crypts: Crypts) -> cKDTree:
    return cKDTree(crypts.centre)


def compartments(points: np.ndarray, section: Section, crypts: Crypts, tree: cKDTree,
                 rips: Rips | None = None) -> np.ndarray:
    """Compartment code (model.OUTSIDE .. RIP: without mucin, blood and capillaries) of section-frame points
    ``(P, 3)``; with ``rips``, torn stroma is RIP."""
    q = section.to_tissue(points)
    _, rho, _, basal, lumen = crypt_coordinates(crypts, q, tree)
    depth = q[:, 2] - surface_depth(crypts, q[:, :2])
    code = np.full(len(points), STROMA, np.uint8)
    code[(rho < basal) | (depth < crypts.surface)] = EPITHELIUM
    code[rho < lumen] = LUMEN
    code[depth < 0] = OUTSIDE
    if rips is not None:  # only stroma tears
        stroma = np.flatnonzero(code == STROMA)
        code[stroma[torn(rips, points[stroma, :2], (rho - basal)[stroma])]] = RIP
    return code


def wall_clearance(points: np.ndarray, section: Section, crypts: Crypts, tree: cKDTree) -> np.ndarray:
    """Distance (approximately, along the radius) from points to the nearest basal wall, and to the
    base of the surface epithelium: negative inside epithelium or above the tissue."""
    q = section.to_tissue(points)
    _, rho, _, basal, _ = crypt_coordinates(crypts, q, tree)
    return np.minimum(rho - basal, q[:, 2] - surface_depth(crypts, q[:, :2]) - crypts.surface)


def compartment_map(scene: SceneModel, points: np.ndarray, parts: np.ndarray | None = None,
                    torn_codes: np.ndarray | None = None) -> np.ndarray:
    """Every compartment (goblet mucin, tears, capillaries and blood included) of section-frame
    points ``(P, 3)``. Capillaries take untorn stroma (a tear cuts through them); red blood cells
    show in the stroma and in capillary lumens; ``parts`` (``vessel_parts`` of the points) and
    ``torn_codes`` (``compartments`` of the points with the scene's rips) may be passed when the
    caller has them."""
    if torn_codes is None:
        torn_codes = compartments(points, scene.section, scene.crypts, crypt_tree(scene.crypts), scene.rips)
    code = torn_codes.copy()
    point_tree = cKDTree(points)
    code[inside_vacuoles(points, scene.mucin, point_tree) & (code == EPITHELIUM)] = MUCIN
    parts = vessel_parts(scene.vessels, points) if parts is None else parts
    stroma = code == STROMA
    code[stroma & (parts != NO_VESSEL)] = VESSEL
    blood = ellipsoid_labels(points, scene.blood, point_tree) > 0
    code[blood & (stroma & (parts != VESSEL_WALL))] = BLOOD
    return code


def _vessel_surfaces(vessels: Vessels, points: np.ndarray, within: float) -> Tuple[np.ndarray, np.ndarray]:
    """Signed distances of points ``(P, 3)`` from the union of the capillary lumens and from the
    union of the tubes (lumen and wall): per piece of tube, the distance to its nearest centreline
    sample minus its radius; the least over the pieces. Exact where below ``within``; inf where a
    point is farther than that from every tube."""
    lumen_sd = np.full(len(points), np.inf)
    outer_sd = np.full(len(points), np.inf)
    for rows in np.split(np.arange(len(vessels.piece)), np.nonzero(np.diff(vessels.piece))[0] + 1):
        if len(rows) == 0:
            continue
        c, lumen, outer = vessels.centre[rows], vessels.lumen[rows[0]], vessels.lumen[rows[0]] + vessels.wall[rows[0]]
        reach = outer + within
        near = np.nonzero(((points >= c.min(0) - reach) & (points <= c.max(0) + reach)).all(1))[0]
        if len(near) == 0:
            continue
        d, _ = cKDTree(c).query(points[near])
        lumen_sd[near] = np.minimum(lumen_sd[near], d - lumen)  # ``near`` holds each point once
        outer_sd[near] = np.minimum(outer_sd[near], d - outer)
    return lumen_sd, outer_sd


def vessel_clearance(vessels: Vessels, points: np.ndarray, within: float) -> np.ndarray:
    """Distance of points ``(P, 3)`` from the outer surface of the capillaries (negative inside a
    tube): exact below ``within``, inf beyond (and without capillaries)."""
    return _vessel_surfaces(vessels, points, within)[1]


def vessel_parts(vessels: Vessels, points: np.ndarray) -> np.ndarray:
    """``model.VESSEL_LUMEN``, ``VESSEL_WALL`` or ``NO_VESSEL`` for points ``(P, 3)``: capillaries are
    the union of their pieces of tube (``model.Vessels``), so where two meet their lumens join."""
    lumen_sd, outer_sd = _vessel_surfaces(vessels, points, 0.0)
    out = np.full(len(points), NO_VESSEL, np.uint8)
    out[outer_sd < 0] = VESSEL_WALL
    out[lumen_sd < 0] = VESSEL_LUMEN
    return out


# ------------------------------------------------------------------------------ rips and blood


# A retraction cleft is widest inside a damaged patch and narrows to nothing over this much of the
# patch field (about unit spread) towards the patch edge (or the edge of its most damaged part, where
# the tear budget keeps only that: a cleft never ends bluntly); along the wall its width varies by this
# share with the crack field, so clefts taper and swell instead of running as even bands.
CLEFT_TAPER = 0.5
CLEFT_VARIATION = 0.6
# Clefts take at most this share of the torn area (narrower where crypt walls are long).
CLEFT_SHARE = 0.7
# A cleft closes where it would be narrower than this share of its greatest width: a tissue gap
# shows as an open space or not at all, never as a hairline drawn around a crypt. (A small tear
# budget keeps the clefts' width and opens them in the most damaged patches only.)
CLEFT_FLOOR = 0.3


def sample_rips(conf: RipsConf, section: Section, crypts: Crypts, tree: cKDTree,
                rng: np.random.Generator, n_waves: int = 48, n_points: int = 8192) -> Rips:
    """Tears covering ``conf.strength`` of the field: retraction clefts along the crypt walls and a
    thin, randomly oriented crack network, both inside damaged patches (about half the field), their
    widths frayed along them down to ``conf.fray_um``."""
    waves = random_waves(rng, n_waves, conf.scale_um, 1.0)
    patch_waves = random_waves(rng, 16, conf.patch_um, 1.0)
    fray_waves = _roughness_waves(rng, n_waves // 2, conf.scale_um, conf.fray_um)
    h = section.field_um / 2
    xy = rng.uniform(-h, h, size=(n_points, 2))
    patch = wave_field(patch_waves, xy)
    patch_threshold = float(np.median(patch))
    q = section.to_tissue(np.column_stack([xy, np.zeros(n_points)]))
    _, rho, _, basal, _ = crypt_coordinates(crypts, q, tree)
    stroma = compartments(np.column_stack([xy, np.zeros(n_points)]), section, crypts, tree) == STROMA
    damaged = stroma & (patch > patch_threshold)
    crack_field, crack_distance = field_and_zero_distance(waves, xy)
    fray = wave_field(fray_waves, xy)
    excess = patch - patch_threshold
    cleft_um = conf.cleft_um if conf.strength > 0 else 0.0
    cleft = damaged & (rho - basal < cleft_width(cleft_um, crack_field, fray, excess))
    allowed = int(CLEFT_SHARE * conf.strength * n_points)
    cleft_excess = 0.0
    if cleft.sum() > allowed:  # the most damaged of them, within the budget, tapering from its edge
        cleft_excess = float(np.sort(excess[cleft])[::-1][allowed])
        cleft = damaged & (rho - basal < cleft_width(cleft_um, crack_field, fray, excess - cleft_excess))
    # Cracks keep their width and open in the most damaged parts of the patches, within the budget;
    # a budget beyond the whole network at that width widens them instead.
    crack_um = conf.crack_um if conf.strength > 0 else 0.0
    free = damaged & ~cleft
    distance = crack_distance[free]
    open_crack = distance < crack_half_width(crack_um, fray[free])
    need = int(conf.strength * n_points - cleft.sum())
    crack_excess = np.inf
    if 0 < need < open_crack.sum():
        crack_excess = float(np.sort(excess[free][open_crack])[::-1][need])
    elif need > 0 and len(distance):
        crack_excess = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = distance / crack_half_width(1.0, fray[free])  # inf where the roughness closes them
        crack_um = float(np.sort(relative)[min(need, len(relative) - 1)])
    return Rips(waves=waves, patch_waves=patch_waves, patch_threshold=patch_threshold, cleft_um=cleft_um,
                cleft_excess=cleft_excess, fray_waves=fray_waves, crack_um=crack_um, crack_excess=crack_excess)


def field_and_zero_distance(waves: np.ndarray, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The value of a ``random_waves`` field at points ``xy`` (``wave_field``) and about their distance
    (um) to its zero set, where the cracks run (the value over its gradient's length), from one
    evaluation of the waves' phases."""
    phase = xy @ waves[:, :2].T + waves[:, 2]
    value = np.sin(phase) @ waves[:, 3]
    gradient = (np.cos(phase) * waves[:, 3]) @ waves[:, :2]
    return value, np.abs(value) / np.maximum(np.linalg.norm(gradient, axis=1), 1e-9)


def crack_half_width(crack_um: float, fray: np.ndarray) -> np.ndarray:
    """Half the width of a crack where the roughness field has the value ``fray``: ``crack_um`` / 2
    swelling and narrowing with it, closed where it would be narrower than ``CLEFT_FLOOR`` of that
    (a crack shows as an open gap or not at all, never as a hairline)."""
    width = np.clip(1 + fray, 0, None)
    return crack_um / 2 * np.where(width >= CLEFT_FLOOR, width, 0.0)


def cleft_width(cleft_um: float, crack_field: np.ndarray, fray: np.ndarray, patch_excess: np.ndarray) -> np.ndarray:
    """Width of the retraction cleft along the crypt wall at points where the crack field has the
    value ``crack_field``, the roughness field ``fray`` and the damage field lies ``patch_excess``
    above the threshold of the clefts."""
    taper = np.clip(patch_excess / CLEFT_TAPER, 0, 1)
    width = taper * np.clip(1 + CLEFT_VARIATION * crack_field + fray, 0, None)
    return cleft_um * np.where(width >= CLEFT_FLOOR, width, 0.0)


def torn(rips: Rips, xy: np.ndarray, wall_distance: np.ndarray) -> np.ndarray:
    """Whether section points ``xy`` (P, 2), at ``wall_distance`` from the nearest crypt wall, lie in a
    tear (tears run through the whole section). The crack field is evaluated in damaged patches only."""
    excess = wave_field(rips.patch_waves, xy) - rips.patch_threshold
    out = excess > 0
    damaged = np.flatnonzero(out)
    crack_field, crack_distance = field_and_zero_distance(rips.waves, xy[damaged])
    fray = wave_field(rips.fray_waves, xy[damaged])
    cracks = (excess[damaged] > rips.crack_excess) & (crack_distance < crack_half_width(rips.crack_um, fray))
    clefts = wall_distance[damaged] < cleft_width(rips.cleft_um, crack_field, fray,
                                                  excess[damaged] - rips.cleft_excess)
    out[damaged] = cracks | clefts
    return out


def sample_blood(conf: BloodConf, section: Section, crypts: Crypts, tree: cKDTree, vessels: Vessels,
                 rng: np.random.Generator) -> Ellipsoids:
    """Extravasated red blood cells (biconcave discs within oblate ellipsoids, ``ellipsoid_depth``)
    scattered in the stroma, outside the epithelium and the capillaries."""
    diameter = conf.diameter_um
    lo, hi = scene_box(section, diameter / 2)
    area = (hi[0] - lo[0]) * (hi[1] - lo[1])
    n = rng.poisson(conf.strength * area / 1000)
    p = rng.uniform(lo, hi, size=(n, 3))
    p[:, 2] = rng.uniform(section.z0, section.z1, size=n)
    keep = ((wall_clearance(p, section, crypts, tree) > diameter / 2)
            & (vessel_clearance(vessels, p, diameter) > diameter / 2))
    rot = random_rotations(rng, n)
    axes = np.tile([diameter / 2, diameter / 2, conf.thickness_um / 2], (n, 1))
    return Ellipsoids(centre=p[keep], rotation=rot[keep], axes=axes[keep])


def ellipsoid_labels(points: np.ndarray, ell: Ellipsoids, point_tree: cKDTree) -> np.ndarray:
    """Index+1 of the ellipsoid containing each point (0 = none); ``point_tree`` indexes ``points``."""
    out = np.zeros(len(points), np.int32)
    if len(ell.centre) == 0:
        return out
    reach = ell.axes.max()
    for i, hits in enumerate(point_tree.query_ball_point(ell.centre, reach)):
        if not hits:
            continue
        hits = np.asarray(hits)
        local = (points[hits] - ell.centre[i]) @ ell.rotation[i]
        inside = ((local / ell.axes[i]) ** 2).sum(1) <= 1
        out[hits[inside]] = i + 1
    return out



# Thickness of a human red cell across its disc (Evans and Fung, Microvascular Research 1972), at
# relative radius rho: in proportion to sqrt(1 - rho^2) (C0 + C1 rho^2 + C2 rho^4), greatest
# (EVANS_FUNG_PEAK) near rho = 0.7 and about a third of that at the centre: the central pallor.
EVANS_FUNG = (0.207, 2.003, -1.123)
EVANS_FUNG_PEAK = 0.6562


def biconcave_factor(rho2: np.ndarray, biconcavity: float) -> np.ndarray:
    """Thickness of a biconcave disc relative to the oblate ellipsoid of the same greatest
    thickness, at squared relative radius ``rho2``: 1 everywhere at ``biconcavity`` 0, the
    Evans-Fung shape at 1."""
    c0, c1, c2 = EVANS_FUNG
    return 1 - biconcavity + biconcavity * (c0 + c1 * rho2 + c2 * rho2 ** 2) / EVANS_FUNG_PEAK


def ellipsoid_depth(xy: np.ndarray, ell: Ellipsoids, z0: float, z1: float, biconcavity: float = 0.0) -> np.ndarray:
    """Length of the vertical line through each point ``xy`` (P, 2) between depths ``z0 < z1``
    that lies inside any of the ellipsoids: the path a ray crossing the slab there takes through them.

    Per ellipsoid the line enters and leaves where ``|(p + t z - c) R / axes| = 1``; overlapping
    ellipsoids (red cells stacked in a capillary) count once, as the union of their intervals.
    With ``biconcavity`` > 0 the ellipsoids are discs about their third axis (a red cell's short one), thinned
    in the middle (``biconcave_factor`` at the chord's middle): each chord shrinks or grows about
    its middle, so the outline stays the ellipsoid's.
    """
    out = np.zeros(len(xy))
    if len(ell.centre) == 0 or len(xy) == 0:
        return out
    tree = cKDTree(xy)
    pixel, enter, leave = [], [], []
    for i, hits in enumerate(tree.query_ball_point(ell.centre[:, :2], ell.axes.max(1))):
        if not hits:
            continue
        hits = np.asarray(hits)
        scale = ell.rotation[i] / ell.axes[i]  # section -> unit-sphere coordinates
        start = (np.column_stack([xy[hits], np.zeros(len(hits))]) - ell.centre[i]) @ scale
        d = scale[2]  # the image of the z direction
        a, b, c = d @ d, start @ d, (start ** 2).sum(1) - 1
        disc = b ** 2 - a * c
        cut = disc > 0
        middle, half = -b[cut] / a, np.sqrt(disc[cut]) / a
        if biconcavity:
            rho = start[cut, :2] + middle[:, None] * d[:2]
            half = half * biconcave_factor((rho ** 2).sum(1), biconcavity)
        pixel.append(hits[cut])
        enter.append(np.clip(middle - half, z0, z1))
        leave.append(np.clip(middle + half, z0, z1))
    if not pixel:
        return out
    pixel, enter, leave = np.concatenate(pixel), np.concatenate(enter), np.concatenate(leave)
    # Union of the intervals per pixel: sweep in order of entry, each adding what lies beyond the
    # farthest exit so far; pixels are offset apart so that one sweep serves them all.
    offset = pixel * 2.0 * (z1 - z0 + 1)
    order = np.lexsort((enter, pixel))
    enter, leave, pixel = enter[order] + offset[order], leave[order] + offset[order], pixel[order]
    reached = np.maximum.accumulate(leave)
    before = np.concatenate([[-np.inf], reached[:-1]])
    np.add.at(out, pixel, np.clip(leave - np.maximum(enter, before), 0, None))
    return out


def vacuole_reach(vac: Vacuoles) -> np.ndarray:
    """(M,) radius of a sphere about each vacuole's centre that holds it."""
    a, b, c = vac.axes.T
    return np.sqrt(a**2 + (b * (1 + np.abs(vac.taper)))**2 + c**2)


def inside_vacuoles(points: np.ndarray, vac: Vacuoles, point_tree: cKDTree) -> np.ndarray:
    """Whether each point lies in any goblet vacuole (the inequality in ``model.Vacuoles``);
    ``point_tree`` indexes ``points``."""
    out = np.zeros(len(points), bool)
    if len(vac.centre) == 0:
        return out
    for i, hits in enumerate(point_tree.query_ball_point(vac.centre, vacuole_reach(vac))):
        if not hits:
            continue
        hits = np.asarray(hits)
        out[hits[in_vacuole((points[hits] - vac.centre[i]) @ vac.rotation[i], vac.axes[i],
                            vac.taper[i], vac.exponent[i])]] = True
    return out


def in_vacuole(local: np.ndarray, axes: np.ndarray, taper: float, exponent: float) -> np.ndarray:
    """Whether local points ``(P, 3)`` lie inside one vacuole (see ``model.Vacuoles``)."""
    a, b, c = axes
    u = np.abs(local[:, 0] / a)
    height = np.sqrt(np.clip(1 - (local[:, 2] / c)**2, 0, None))
    width = b * np.maximum(1 + taper * local[:, 0] / a, 0) * height
    inside = (height > 0) & (width > 0) & (u <= 1)
    v = np.abs(local[:, 1]) / np.where(inside, width, 1)
    return inside & (u**exponent + v**exponent <= 1)
