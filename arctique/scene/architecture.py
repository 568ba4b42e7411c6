"""Crypt architecture, section pose and the tissue compartments (stroma, epithelium, lumen, ...).

Crypts are capsules along the tissue w axis whose axis meanders and whose wall is modulated by a few
angular harmonics; all of it is analytic, so compartments can be evaluated at any point without
meshes or booleans.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy.spatial import cKDTree

from ..config import CryptConf, SectionConf
from .geometry import random_rotations
from .model import EPITHELIUM, LUMEN, OUTSIDE, STROMA, Crypts, Ellipsoids, Rips, Section

WALL_HARMONICS = 3


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


def sample_crypts(conf: CryptConf, section: Section, z_pad: float,
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
    warp_amp = rng.uniform(0.3, 1.0, size=(n, 2)) * conf.warp_um
    warp_phase = rng.uniform(0, 2 * np.pi, size=(n, 2))
    amp = rng.uniform(0, 1, size=(n, WALL_HARMONICS)) * conf.wall_roughness / np.arange(1, WALL_HARMONICS + 1)
    phase = rng.uniform(0, 2 * np.pi, size=(n, WALL_HARMONICS))
    return Crypts(
        centre=centre, radius=conf.radius_um * scale, lumen=conf.lumen_radius_um * scale,
        depth=float(conf.depth_um), warp_amp=warp_amp, warp_phase=warp_phase,
        wavelength=float(conf.warp_wavelength_um), wall=np.stack([amp, phase], -1),
    )


def axis_point(crypts: Crypts, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(u, v) of the axis of crypts ``idx`` at depths ``w`` (clamped to the tube)."""
    wc = np.clip(w, 0, crypts.depth)
    arg = 2 * np.pi * wc[..., None] / crypts.wavelength + crypts.warp_phase[idx]
    return crypts.centre[idx] + crypts.warp_amp[idx] * np.sin(arg)


def wall_factor(crypts: Crypts, idx: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Angular modulation of crypt radii (1 = round)."""
    k = np.arange(2, 2 + WALL_HARMONICS)
    wall = crypts.wall[idx]
    return 1 + (wall[..., 0] * np.cos(k * theta[..., None] + wall[..., 1])).sum(-1)


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
    return idx, rho[pick], theta[pick], crypts.radius[idx] * f[pick], crypts.lumen[idx] * f[pick]


def crypt_tree(crypts: Crypts) -> cKDTree:
    return cKDTree(crypts.centre)


def compartments(points: np.ndarray, section: Section, crypts: Crypts, tree: cKDTree) -> np.ndarray:
    """Compartment code (model.OUTSIDE .. LUMEN) of section-frame points ``(P, 3)``."""
    q = section.to_tissue(points)
    _, rho, _, basal, lumen = crypt_coordinates(crypts, q, tree)
    code = np.full(len(points), STROMA, np.uint8)
    code[rho < basal] = EPITHELIUM
    code[rho < lumen] = LUMEN
    code[q[:, 2] < 0] = OUTSIDE
    return code


def wall_clearance(points: np.ndarray, section: Section, crypts: Crypts, tree: cKDTree) -> np.ndarray:
    """Distance (approximately, along the radius) from points to the nearest basal wall, and to the
    luminal surface: negative inside epithelium or above the tissue."""
    q = section.to_tissue(points)
    _, rho, _, basal, _ = crypt_coordinates(crypts, q, tree)
    return np.minimum(rho - basal, q[:, 2])


# ------------------------------------------------------------------------------ rips and blood


def sample_rips(strength: float, scale_um: float, elongation: float, section: Section,
                rng: np.random.Generator, n_waves: int = 48) -> Rips:
    """A smooth anisotropic random field over the section; its top ``strength`` quantile is torn."""
    angle = rng.uniform(0, np.pi)
    direction = rng.uniform(0, 2 * np.pi, n_waves)
    freq = rng.uniform(0.5, 2.0, n_waves) * 2 * np.pi / scale_um
    kx = np.cos(direction) * freq / elongation  # stretched along the rip direction
    ky = np.sin(direction) * freq
    ca, sa = np.cos(angle), np.sin(angle)
    waves = np.stack([ca * kx - sa * ky, sa * kx + ca * ky, rng.uniform(0, 2 * np.pi, n_waves),
                      rng.normal(size=n_waves) / np.sqrt(n_waves)], 1)
    h = section.field_um / 2 + section.margin_um
    grid = rng.uniform(-h, h, size=(4096, 2))
    values = rip_field(waves, grid)
    threshold = float(np.quantile(values, 1 - strength)) if strength > 0 else np.inf
    return Rips(waves=waves, threshold=threshold)


def rip_field(waves: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Value of the rip field at ``(P, 2)`` section coordinates; |values| ~ 1."""
    arg = xy @ waves[:, :2].T + waves[:, 2]
    # A ridge-like transform turns the smooth field into narrow, elongated tears.
    return 1 - np.abs(np.sin(arg) @ waves[:, 3])


def sample_blood(strength: float, diameter: float, section: Section, crypts: Crypts, tree: cKDTree,
                 rng: np.random.Generator) -> Ellipsoids:
    """Red blood cells (biconcave discs approximated by oblate ellipsoids) in the stroma."""
    lo, hi = scene_box(section, diameter / 2)
    area = (hi[0] - lo[0]) * (hi[1] - lo[1])
    n = rng.poisson(strength * area / 1000)
    p = rng.uniform(lo, hi, size=(n, 3))
    p[:, 2] = rng.uniform(section.z0, section.z1, size=n)
    keep = wall_clearance(p, section, crypts, tree) > diameter / 2
    rot = random_rotations(rng, n)
    axes = np.tile([diameter / 2, diameter / 2, 1.1], (n, 1))
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

