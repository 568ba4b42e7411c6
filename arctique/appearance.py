"""Stain physics in numpy: optical-density vectors, per-cell stain amounts and tissue textures.

Everything here is appearance only (``nuclei``, ``stain``, ``optics``) and draws from the
``appearance/*`` streams, so it never moves geometry or labels. Concentrations are optical
densities (log10) per micrometre of path; the renderer turns them into Cycles absorption.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from scipy import fft
from scipy.special import expit, ndtri
from scipy.ndimage import distance_transform_edt, fourier_gaussian, rotate

from .config import ArctiqueConf, StainConf
from .rng import stream
from .scene.architecture import (compartment_map, compartments, crypt_tree, ellipsoid_depth, random_waves, vessel_parts,
                                 wave_field)
from .scene.build import field_um
from .scene.cells import inside_body, inside_nucleus
from .classes import CLASS_IDS, CLASS_NAMES, NAMES
from .labels.exact import tissue_mask
from .scene.model import (BLOOD, EPITHELIUM, LUMEN, MUCIN, OUTSIDE, RIP, STROMA, VESSEL, VESSEL_WALL, Crypts, Rips,
                          SceneModel, Section)

LN10 = float(np.log(10))
STAINS = ("hematoxylin", "eosin", "blood")
_OCCUPANCY_CHUNK = 200_000  # grid points tested at once; bounds the memory
CYTOPLASM_SPREAD = 0.8  # a cytoplasm's uptake spreads by this share of its nucleus's (nuclei.uptake_spread)
CLEARING_EDGE = 0.5  # softness of the edges of clear spaces, in standard deviations of their field


def od_vectors(stain: StainConf) -> Dict[str, np.ndarray]:
    """Unit RGB optical-density vector per stain, rotated about the grey axis by ``colour_shift``.

    ``colour_shift`` = +1 rotates by +25 degrees (towards red), -1 by -25 degrees (towards blue).
    """
    angle = np.radians(25.0 * stain.colour_shift)
    k = np.ones(3) / np.sqrt(3)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx
    out = {}
    for name in STAINS:
        v = rot @ np.asarray(getattr(stain, f"{name}_od"), float)
        v = np.clip(v, 1e-4, None)
        out[name] = v / np.linalg.norm(v)
    return out


@dataclass(frozen=True)
class CellStains:
    """Per-cell shader inputs by name: stain amounts in OD per um, texture strengths, and vectors
    in the cell's frame (texture offset, pale-zone centre, inverse semi-axes of the nucleus)."""

    nucleus: Dict[str, np.ndarray]  # name -> (N,) or (N, 3)
    body: Dict[str, np.ndarray]


def appearance_mixture(cfg: ArctiqueConf, cls: np.ndarray) -> np.ndarray:
    """(N, classes) share of each class's look in each cell, columns in ``classes.NAMES`` order:
    one-hot, except that lymphocytes take ``nuclei.lym_to_pla`` of the plasma-cell look (label
    ambiguity with a known mixture)."""
    column = {name: k for k, name in enumerate(NAMES)}
    out = np.zeros((len(cls), len(NAMES)))
    out[np.arange(len(cls)), [column[CLASS_NAMES[int(c)]] for c in cls]] = 1.0
    lym = cls == CLASS_IDS["LYM"]
    out[lym, column["LYM"]] = 1 - cfg.nuclei.lym_to_pla
    out[lym, column["PLA"]] = cfg.nuclei.lym_to_pla
    return out


def _per_class(scene: SceneModel, cfg: ArctiqueConf, key: str) -> np.ndarray:
    """``cells.types.<class>.<key>`` of every cell, blended by its ``appearance_mixture``."""
    table = np.array([getattr(getattr(cfg.cells.types, name), key) for name in NAMES], float)
    return appearance_mixture(cfg, scene.cells.cls) @ table


def uptake_field(st: StainConf, seed: int, xy: np.ndarray) -> np.ndarray:
    """Relative stain uptake (log-normal about 1) at section points ``xy`` (P, 2), um: a smooth
    random field of the sample, so that no field is stained evenly."""
    waves = random_waves(stream(seed, "appearance/field"), 16, st.field_variation_um, 1.0)
    return np.exp(st.field_variation * wave_field(waves, xy))


def cell_stains(cfg: ArctiqueConf, scene: SceneModel) -> CellStains:
    st, nu, cells = cfg.stain, cfg.nuclei, scene.cells
    rng = stream(scene.seed, "appearance/cells")
    n = len(cells)
    look = partial(_per_class, scene, cfg)
    field = uptake_field(st, scene.seed, cells.centre[:, :2])
    variation = np.exp(rng.normal(0, nu.uptake_spread, n)) * field  # cell to cell, on the field's uptake
    single = cells.lobe_count == 1  # rim and nucleoli need the ellipsoid of a one-lobe nucleus
    offset = rng.uniform(0, 1000, size=(n, 3))
    nucleus = {
        "h_conc": look("hematoxylin") * nu.intensity * variation,
        "chromatin": np.clip(look("chromatin") * nu.chromatin_contrast * np.exp(rng.normal(0, 0.2, n)), 0, 4),
        "rim": look("rim") * single,
        "nucleoli": look("nucleoli") * single * (rng.random(n) < 0.8),
        "inv_axes": 1 / np.maximum(cells.lobe_axes[:, 0], 1e-3),
        "texture_offset": offset,
    }
    # The pale Golgi zone sits beside the nucleus on the side of the cell's centre.
    side = np.sign(cells.body_centre[:, 0])
    hof_centre = np.zeros((n, 3))
    hof_centre[:, 0] = side * (cells.lobe_axes[:, 0, 0] + 1.0)
    body_spread = CYTOPLASM_SPREAD * nu.uptake_spread
    body_e = look("cytoplasm_eosin") * st.eosin_intensity * np.exp(rng.normal(0, body_spread, n)) * field
    body = {
        "e_conc": body_e, "h_conc": look("cytoplasm_hematoxylin") * np.exp(rng.normal(0, body_spread, n)) * field,
        "granules": look("granules"), "hof": look("hof") * (side != 0), "hof_centre": hof_centre,
        "inv_axes": nucleus["inv_axes"], "displaced": single.astype(float),
        "texture_offset": offset,
    }
    return CellStains(nucleus=nucleus, body=body)


def layer_depths(s: Section, layers: int) -> np.ndarray:
    """Centres (z) of the depth layers of the tissue texture in section ``s``, top first; one layer
    lies at the slab's mid-plane exactly, the plane of the tissue mask."""
    dz = s.thickness / layers
    return (s.z0 + s.z1) / 2 + dz * ((layers - 1) / 2 - np.arange(layers))


def texture_grid(field_um: float, margin_um: float, mpp: float) -> np.ndarray:
    """Pixel-centre coordinates (x for columns, y for rows, top row first) of the tissue texture of a
    section (``Section.field_um``, ``Section.margin_um``): the image's pixel grid extended by whole
    pixels over the scene margin, so the image's pixel centres are points of the texture's grid."""
    size = int(round(field_um / mpp))
    margin = int(np.ceil(margin_um / mpp))
    return (np.arange(-margin, size + margin) + 0.5 - size / 2) * mpp


def _grid_points(xs: np.ndarray, z: float) -> np.ndarray:
    """The points of the grid ``xs`` (rows from top = +y) at depth ``z``, (H * W, 3) row-major."""
    xx, yy = np.meshgrid(xs, xs[::-1])
    return np.column_stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)])


def crypt_compartments(section: Section, crypts: Crypts, rips: Rips, mpp: float, layers: int) -> np.ndarray:
    """(layers, H * W) compartments of the texture's points that the crypts and tears decide
    (``architecture.compartments``): most of the work of ``section_compartments``, which needs no
    cell, so it can be done while the epithelium is built."""
    xs, tree = texture_grid(section.field_um, section.margin_um, mpp), crypt_tree(crypts)
    return np.stack([compartments(_grid_points(xs, z), section, crypts, tree, rips)
                     for z in layer_depths(section, layers)])


def compartment_maps(scene: SceneModel, xs: np.ndarray, zs: np.ndarray,
                     torn_codes: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(len(zs), H, W) compartment codes at depths ``zs`` on the grid ``xs`` (rows from top = +y),
    and the capillary parts (``architecture.vessel_parts``) there; ``torn_codes`` are the
    ``crypt_compartments`` of the scene there, when made beforehand."""
    codes, parts = [], []
    shape = (len(xs), len(xs))
    for k, z in enumerate(zs):
        points = _grid_points(xs, z)
        part = vessel_parts(scene.vessels, points)
        codes.append(compartment_map(scene, points, part, None if torn_codes is None else torn_codes[k]).reshape(shape))
        parts.append(part.reshape(shape))
    return np.stack(codes), np.stack(parts)


@dataclass(frozen=True)
class Compartments:
    """The tissue's compartments where the texture and the tissue mask need them."""

    codes: np.ndarray  # (layers, H, W) uint8 on ``texture_grid``, at ``layer_depths``
    parts: np.ndarray  # (layers, H, W) capillary parts there
    mask: np.ndarray  # (size, size) uint8: ``labels.exact.tissue_mask``, the image's pixels at the mid-plane


def section_compartments(scene: SceneModel, size: int, mpp: float, layers: int,
                         torn_codes: Optional[np.ndarray] = None) -> Compartments:
    """The texture's compartment maps and the tissue mask, cut out of the mid-plane layer of the
    maps (the same points, so the same codes) or, for an even number of layers, computed apart;
    ``torn_codes`` are the scene's ``crypt_compartments`` when made beforehand."""
    xs, zs = texture_grid(scene.section.field_um, scene.section.margin_um, mpp), layer_depths(scene.section, layers)
    codes, parts = compartment_maps(scene, xs, zs, torn_codes)
    mid = np.flatnonzero(zs == (scene.section.z0 + scene.section.z1) / 2)
    if len(mid):
        margin = (len(xs) - size) // 2
        mask = codes[mid[0], margin:margin + size, margin:margin + size].astype(np.uint8)
    else:
        mask = tissue_mask(scene, size, mpp)
    return Compartments(codes, parts, mask)


def _ridges(field: np.ndarray, width: float) -> np.ndarray:
    """Thin, curvy lines in [0, 1]: the zero set of a smooth random field."""
    field = field / (field.std() + 1e-12)
    return np.exp(-((field / width) ** 2))


def _periodic_blur(field: np.ndarray, sigma) -> np.ndarray:
    """Gaussian blur of a periodic random field (``sigma`` in grid steps per axis), in Fourier space:
    the kernels of the matrix textures span up to a few hundred pixels."""
    return fft.irfftn(fourier_gaussian(fft.rfftn(field), sigma, n=field.shape[-1]), s=field.shape)


def _fibres(rng: np.random.Generator, bundles: np.random.Generator, shape: tuple, stain: StainConf,
            mpp: float) -> np.ndarray:
    """Collagen fibres in [0, 1]: wavy lines, locally parallel, whose direction turns across the field.

    Each of a few orientations gets the zero set of noise smoothed far more along it than across
    (long thin fibres waving over ``fibre_wave_um``); a smooth random field picks the orientation
    that shows where. Their width varies over bundles drawn from ``bundles``.
    """
    layers, h, w = shape
    along, across = stain.fibre_wave_um / mpp, stain.fibre_width_um / mpp * 1.5
    angles = np.arange(4) * 45.0
    size = int(np.ceil(np.hypot(h, w))) + 2
    fields = []
    for angle in angles:
        noise = _periodic_blur(rng.normal(size=(layers, size, size)), (0.4, across, along))
        turned = rotate(noise, angle, axes=(1, 2), reshape=False, order=1, mode="wrap")
        top, left = (size - h) // 2, (size - w) // 2
        fields.append(turned[:, top:top + h, left:left + w])
    choice = _periodic_blur(rng.normal(size=(len(angles), 1, h, w)), (0, 0, 12 / mpp, 12 / mpp))
    weight = np.exp(8 * choice / (choice.std() + 1e-12))
    # Fibres gather into bundles: their width varies over ``fibre_bundle_um`` by ``fibre_bundling``
    # (SD of its log; the median narrowed so that the mean width, and the matrix's eosin, stay),
    # thin fibrils beside thick bundles.
    width = 0.25
    if stain.fibre_bundling > 0:
        size_px = stain.fibre_bundle_um / mpp
        spread = _periodic_blur(bundles.normal(size=(1, h, w)), (0, size_px, size_px))
        b = stain.fibre_bundling
        width = width * np.exp(b * spread / (spread.std() + 1e-12) - b * b / 2)
    lines = np.stack([_ridges(f, width) for f in fields])
    return (lines * weight).sum(0) / weight.sum(0)


def _retraction(occupied: np.ndarray, stain: StainConf, mpp: float) -> np.ndarray:
    """Density of the matrix around cells, (layers, H, W) in [1 - ``cell_halo``, 1]: the matrix
    shrinks back from cells in fixation, leaving a clear rim about ``halo_um`` wide round each."""
    if stain.cell_halo <= 0:
        return np.ones(occupied.shape, np.float32)
    distance = _distance_to(occupied >= 0.5, mpp)
    return (1 - stain.cell_halo * np.exp(-(distance / stain.halo_um) ** 2)).astype(np.float32)


def _distance_to(masks: np.ndarray, mpp: float) -> np.ndarray:
    """(layers, H, W) distance (um) of every grid point to the nearest ``True`` point of its layer."""
    return np.stack([distance_transform_edt(~layer, sampling=mpp) for layer in masks])


def cell_occupancy(scene: SceneModel, xs: np.ndarray, layers: int, per_layer: int = 4) -> np.ndarray:
    """(layers, H, W) share of each depth layer's path that runs through a cell (nucleus or body)
    on the texture grid ``xs``: cells displace the matrix, so a ray through a nucleus does not also
    cross a full slab of stroma or cytoplasm. Evaluated on every other grid point (the matrix
    under a cell edge is blurred by the optics anyway) and repeated."""
    coarse = _occupancy(scene, xs[::2], layers, per_layer)
    return np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)[:, :len(xs), :len(xs)]


def _window(grid: np.ndarray, centre: np.ndarray, reach: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """First and one-past-last index of the points of an ascending ``grid`` within ``reach`` of each
    ``centre``."""
    return np.searchsorted(grid, centre - reach, "left"), np.searchsorted(grid, centre + reach, "right")


def _occupancy(scene: SceneModel, xs: np.ndarray, layers: int, per_layer: int) -> np.ndarray:
    s, cells = scene.section, scene.cells
    dz = s.thickness / layers
    zs = s.z1 - dz * (np.arange(layers * per_layer) + 0.5) / per_layer
    ys = xs[::-1]
    shape_noise = cells.noise[:, :, 5].sum(1)
    lobes = np.linalg.norm(cells.lobe_centre, axis=2) + cells.lobe_axes.max(2) * (1 + shape_noise[:, None])
    reach = np.maximum(lobes.max(1), np.linalg.norm(cells.body_centre, axis=1) + cells.body_axes.max(1))
    # Each cell's box of grid points within its reach (ys and zs descend: searched negated).
    x0, x1 = _window(xs, cells.centre[:, 0], reach)
    y0, y1 = _window(-ys, -cells.centre[:, 1], reach)
    z0, z1 = _window(-zs, -cells.centre[:, 2], reach)
    nx, ny, nz = x1 - x0, y1 - y0, z1 - z0
    count = nx * ny * nz
    inside = np.zeros((len(zs), len(ys), len(xs)), bool)
    rows = np.flatnonzero(count > 0)
    ends = np.cumsum(count[rows])
    starts = np.unique(np.searchsorted(ends, np.arange(0, ends[-1] if len(ends) else 0, _OCCUPANCY_CHUNK), "right"))
    for chunk in np.split(rows, starts[1:]) if len(rows) else []:
        row = np.repeat(chunk, count[chunk])
        k = np.arange(len(row)) - np.repeat(np.cumsum(count[chunk]) - count[chunk], count[chunk])
        plane = nx[row] * ny[row]
        iz, rest = z0[row] + k // plane, k % plane
        iy, ix = y0[row] + rest // nx[row], x0[row] + rest % nx[row]
        pts = np.column_stack([xs[ix], ys[iy], zs[iz]])
        hit = inside_body(pts, cells, row)
        rest = np.flatnonzero(~hit)
        hit[rest] = inside_nucleus(pts[rest], cells, row[rest])
        inside[iz[hit], iy[hit], ix[hit]] = True
    return inside.reshape(layers, per_layer, len(ys), len(xs)).mean(1)


@dataclass(frozen=True)
class MatrixPatterns:
    """The random patterns of the tissue matrix, (layers, H, W) on the texture grid."""

    fibres: np.ndarray  # collagen fibres, in [0, 1]
    mottle: np.ndarray  # uneven eosin uptake, around 1
    strands: np.ndarray  # mucin strands, in [0, 1]
    grain: np.ndarray  # fine granular texture of cytoplasm, matrix and mucin, around 1
    clearing: np.ndarray  # density of the lamina propria's matrix between fibres, in [space_density, 1]


def matrix_patterns(cfg: ArctiqueConf, seed: int) -> MatrixPatterns:
    """The matrix patterns of sample ``seed``. They depend on the seed and the texture grid's shape
    only (the field and margin of the config, as a scene of this config has them), so they can be
    made before the scene exists."""
    st, op = cfg.stain, cfg.optics
    n = len(texture_grid(field_um(cfg), cfg.tissue.margin_um, op.mpp))
    shape = (op.layers, n, n)
    rng = stream(seed, "appearance/tissue")
    fibres = _fibres(rng, stream(seed, "appearance/fibre_bundles"), shape, st, op.mpp)
    mottle = _periodic_blur(rng.normal(size=shape), (0.5, st.mottle_um / op.mpp, st.mottle_um / op.mpp))
    mottle = 1 + st.mottle * mottle / (mottle.std() + 1e-12)
    strands = _ridges(_periodic_blur(rng.normal(size=shape), (0.3, 1.0 / op.mpp, 1.0 / op.mpp)), 0.12)
    grain_um = st.grain_um / op.mpp
    grain = _periodic_blur(stream(seed, "appearance/grain").normal(size=shape), (0.3, grain_um, grain_um))
    grain = np.clip(1 + st.grain * grain / (grain.std() + 1e-12), 0, None)
    clearing = _clearing(stream(seed, "appearance/clearing"), shape, st, op.mpp)
    return MatrixPatterns(fibres, mottle, strands, grain, clearing)


def _clearing(rng: np.random.Generator, shape: tuple, stain: StainConf, mpp: float) -> np.ndarray:
    """Matrix density in [``space_density``, 1]: interstitial spaces of ``clearing_um`` where a
    smooth random field falls below its ``stroma_clearing`` quantile, with soft edges."""
    if stain.stroma_clearing <= 0:
        return np.ones(shape, np.float32)
    size = stain.clearing_um / mpp / 2
    field = _periodic_blur(rng.normal(size=shape), (0.3, size, size))
    field /= field.std() + 1e-12
    dense = expit((field - ndtri(stain.stroma_clearing)) / CLEARING_EDGE)
    return (stain.space_density + (1 - stain.space_density) * dense).astype(np.float32)


def red_cell_depth(scene: SceneModel, xs: np.ndarray, layers: int, biconcavity: float) -> np.ndarray:
    """(layers, H, W) share of each depth layer's thickness that red cells fill, on the grid ``xs``.

    A red cell (about 2 um thick) lies wholly within a 3-5 um slab more often than it crosses its
    mid-plane, and a bright-field image shows it whole: its projection, as dark as the path
    through it is long. Sampling the cells at the layer's depth alone would show most of them as
    rods cut edge-on, each as dark as the layer is thick.
    """
    sec, n = scene.section, len(xs)
    # Only the grid points under some cell's bounding square are traced (a few per cent of the grid).
    near = np.zeros((n, n), bool)
    for (x, y), r in zip(scene.blood.centre[:, :2], scene.blood.axes.max(1, initial=0)):
        c0, c1 = np.searchsorted(xs, [x - r, x + r])
        r0, r1 = np.searchsorted(xs, [y - r, y + r])
        near[n - r1:n - r0, c0:c1] = True  # rows run from the top (+y) down
    rows, cols = np.nonzero(near)
    xy = np.column_stack([xs[cols], xs[::-1][rows]])
    dz = sec.thickness / layers
    out = np.zeros((layers, n, n), np.float32)
    for k, z in enumerate(layer_depths(sec, layers)):
        out[k][near] = ellipsoid_depth(xy, scene.blood, z - dz / 2, z + dz / 2, biconcavity) / dz
    return out


def tissue_textures(cfg: ArctiqueConf, scene: SceneModel, patterns: Callable[[], MatrixPatterns],
                    compartments: Callable[[], Compartments]) -> np.ndarray:
    """Stain concentrations of the tissue matrix: ``(layers, H, W, 3)`` float32 (H, E, blood).

    Rows run from the top of the field (+y) down, as in the image. ``patterns`` returns the
    ``matrix_patterns`` and ``compartments`` the ``section_compartments`` of the scene; each is
    called when it is needed, after the work that does not depend on it (either may still be being
    made in another process).
    """
    st, op = cfg.stain, cfg.optics
    xs = texture_grid(scene.section.field_um, scene.section.margin_um, op.mpp)
    shape = (op.layers, len(xs), len(xs))
    occupied = cell_occupancy(scene, xs, op.layers)
    eosin = st.eosin_intensity
    matrix = patterns()
    fibres, mottle, strands = matrix.fibres, matrix.mottle, matrix.strands
    maps = compartments()
    codes, parts = maps.codes, maps.parts
    # Collagen is densest in the sheath around the crypts and under the surface epithelium.
    epithelium = (codes == EPITHELIUM) | (codes == MUCIN)
    to_epithelium = _distance_to(epithelium, op.mpp)
    sheath = 1 + np.exp(-to_epithelium / 4.0)

    out = np.zeros(shape + (3,), np.float32)
    h, e = out[..., 0], out[..., 1]
    stroma = codes == STROMA
    c = st.fibre_contrast
    # Matrix between fibres, relative: clear in the interstitial spaces, unless overstaining fills them.
    gaps = (1 - c) * matrix.clearing + c * st.overstaining
    stroma_e = eosin * (st.stroma_eosin * mottle * (gaps + c * fibres) + st.fibre_eosin * c * fibres * sheath)
    e[stroma] = (stroma_e * _retraction(occupied, st, op.mpp))[stroma]
    h[stroma] = st.stroma_hematoxylin
    epi = codes == EPITHELIUM
    lumen_near = _distance_to(codes == LUMEN, op.mpp)
    apical = epi & (lumen_near <= st.apical_um)
    e[epi] = (st.epithelium_eosin * eosin * mottle)[epi]
    e[apical] += st.apical_eosin * eosin
    basal = np.exp(-_distance_to(stroma, op.mpp) / st.basal_um)
    h[epi] = (st.epithelium_hematoxylin + st.basal_hematoxylin * basal)[epi]
    mucin = codes == MUCIN
    mesh = st.mucin_floor + (1 - st.mucin_floor) * 2 * strands  # mucin: strands over a floor
    # Clear in the middle, stained at the theca's edge (where the mucin is densest) and faded between.
    edge = st.mucin_edge * np.exp(-_distance_to(~mucin, op.mpp) / st.mucin_edge_um)
    residue = (1 - st.goblet_clarity * (1 - edge)) * mesh
    e[mucin] = (st.mucin_eosin * eosin * residue)[mucin]
    h[mucin] = (st.mucin_hematoxylin * residue)[mucin]
    # Crypt lumens hold a little secreted mucus: faint strands, never bare glass.
    lumen = codes == LUMEN
    h[lumen] = (st.lumen_mucus * mesh)[lumen]
    # Capillaries: an eosinophilic wall around a lumen of faintly stained plasma.
    vessel = codes == VESSEL
    wall = vessel & (parts == VESSEL_WALL)
    e[wall] = (st.vessel_wall_eosin * eosin * mottle)[wall]
    h[wall] = st.stroma_hematoxylin
    e[vessel & ~wall] = st.plasma_eosin * eosin
    tissue = (codes != OUTSIDE) & (codes != RIP)
    biconcavity = cfg.tissue.blood.biconcavity
    out[..., 2][tissue] = st.blood_density * red_cell_depth(scene, xs, op.layers, biconcavity)[tissue]
    e[codes == BLOOD] = st.stroma_eosin * eosin
    cytoplasm_and_matrix = stroma | epi | mucin | lumen
    out[cytoplasm_and_matrix] *= matrix.grain[cytoplasm_and_matrix][:, None]
    out[..., :2] *= uptake_field(st, scene.seed, _grid_points(xs, 0.0)[:, :2]).reshape(len(xs), len(xs), 1)
    out *= (1 - occupied)[..., None]
    return np.clip(out, 0, None)


def layer_transmittance(textures: np.ndarray, od: Dict[str, np.ndarray], thickness: float) -> np.ndarray:
    """Beer-Lambert transmittance of each depth layer, (layers, H, W, 3) float32 in (0, 1]."""
    dz = thickness / textures.shape[0]
    absorbance = sum(textures[..., i, None] * od[name] for i, name in enumerate(STAINS))
    return np.exp(-LN10 * dz * absorbance).astype(np.float32)
