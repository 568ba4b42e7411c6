"""Stain physics in numpy: optical-density vectors, per-cell stain amounts and tissue textures.

Everything here is appearance only (``nuclei``, ``stain``, ``optics``) and draws from the
``appearance/*`` streams, so it never moves geometry or labels. Concentrations are optical
densities (log10) per micrometre of path; the renderer turns them into Cycles absorption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from .config import ArctiqueConf, StainConf
from .rng import stream
from .scene.architecture import compartments, crypt_tree, ellipsoid_labels, rip_field
from .scene.model import BLOOD, CLASS_IDS, CLASS_NAMES, EPITHELIUM, MUCIN, RIP, STROMA, SceneModel

LN10 = float(np.log(10))
STAINS = ("hematoxylin", "eosin", "blood")


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
    """Per-cell stain amounts (OD per um) for the nucleus and the cell body."""

    nucleus_h: np.ndarray  # (N,)
    body_h: np.ndarray  # (N,)
    body_e: np.ndarray  # (N,)
    granular: np.ndarray  # (N,) 1 for eosinophil granules
    texture_offset: np.ndarray  # (N, 3) per-cell shift of the chromatin texture (um)


def cell_stains(cfg: ArctiqueConf, scene: SceneModel) -> CellStains:
    st, nu = cfg.stain, cfg.nuclei
    rng = stream(scene.seed, "appearance/cells")
    n = len(scene.cells)
    names = [CLASS_NAMES[int(c)] for c in scene.cells.cls]

    def per_class(table: Dict[str, float], morph: bool = True) -> np.ndarray:
        values = np.array([table.get(name, 0.0) for name in names], float)
        if morph and nu.lym_to_pla > 0:
            lym = scene.cells.cls == CLASS_IDS["LYM"]
            values[lym] = (1 - nu.lym_to_pla) * table.get("LYM", 0) + nu.lym_to_pla * table.get("PLA", 0)
        return values

    variation = np.exp(rng.normal(0, 0.12, n))  # cell-to-cell stain uptake
    nucleus_h = st.nucleus_hematoxylin * nu.intensity * per_class(st.class_hematoxylin) * variation
    body_e = per_class(st.cytoplasm_eosin) * st.eosin_intensity * np.exp(rng.normal(0, 0.1, n))
    body_h = per_class(st.cytoplasm_hematoxylin) * np.exp(rng.normal(0, 0.1, n))
    granular = (scene.cells.cls == CLASS_IDS["EOS"]).astype(float)
    return CellStains(nucleus_h=nucleus_h, body_h=body_h, body_e=body_e, granular=granular,
                      texture_offset=rng.uniform(0, 1000, size=(n, 3)))


def layer_depths(scene: SceneModel, layers: int) -> np.ndarray:
    """Centres (z) of the depth layers of the tissue texture, top first."""
    s = scene.section
    dz = s.thickness / layers
    return s.z1 - dz * (np.arange(layers) + 0.5)


def texture_grid(scene: SceneModel, mpp: float) -> np.ndarray:
    """Pixel-centre coordinates (x for columns, y for rows, top row first) of the tissue texture,
    which covers the field plus the scene margin."""
    half = scene.section.field_um / 2 + scene.section.margin_um
    n = int(np.ceil(2 * half / mpp))
    return -half + (np.arange(n) + 0.5) * (2 * half / n)


def compartment_maps(scene: SceneModel, xs: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """(len(zs), H, W) compartment codes at depths ``zs`` on the grid ``xs`` (rows from top = +y)."""
    xx, yy = np.meshgrid(xs, xs[::-1])
    xy = np.column_stack([xx.ravel(), yy.ravel()])
    tree = crypt_tree(scene.crypts)
    torn = rip_field(scene.rips.waves, xy) > scene.rips.threshold  # tears run through the section
    maps = []
    for z in zs:
        pts = np.column_stack([xy, np.full(len(xy), z)])
        point_tree = cKDTree(pts)
        code = compartments(pts, scene.section, scene.crypts, tree)
        code[(ellipsoid_labels(pts, scene.mucin, point_tree) > 0) & (code == EPITHELIUM)] = MUCIN
        code[torn & (code == STROMA)] = RIP
        code[(ellipsoid_labels(pts, scene.blood, point_tree) > 0) & (code == STROMA)] = BLOOD
        maps.append(code.reshape(xx.shape))
    return np.stack(maps)


def _ridges(rng: np.random.Generator, shape: tuple, sigma_px: float, width: float) -> np.ndarray:
    """Thin, curvy lines in [0, 1]: the zero set of a smooth random field."""
    field = gaussian_filter(rng.normal(size=shape), sigma=(0.3, sigma_px, sigma_px), mode="wrap")
    field /= field.std() + 1e-12
    return np.exp(-((field / width) ** 2))


def tissue_textures(cfg: ArctiqueConf, scene: SceneModel) -> np.ndarray:
    """Stain concentrations of the tissue matrix: ``(layers, H, W, 3)`` float32 (H, E, blood).

    Rows run from the top of the field (+y) down, as in the image.
    """
    st, op = cfg.stain, cfg.optics
    xs = texture_grid(scene, op.mpp)
    zs = layer_depths(scene, op.layers)
    codes = compartment_maps(scene, xs, zs)
    rng = stream(scene.seed, "appearance/tissue")
    shape = codes.shape
    fibres = np.maximum(_ridges(rng, shape, 2.0 / op.mpp, 0.35), 0.7 * _ridges(rng, shape, 5.0 / op.mpp, 0.25))
    mottle = gaussian_filter(rng.normal(size=shape), sigma=(0.5, 3.0 / op.mpp, 3.0 / op.mpp), mode="wrap")
    mottle = 1 + 0.25 * mottle / (mottle.std() + 1e-12)
    strands = _ridges(rng, shape, 1.2 / op.mpp, 0.4)

    c = st.fibre_contrast
    fibre_level = (1 - c) + c * (fibres + st.overstaining * (1 - fibres)) * 1.6
    out = np.zeros(shape + (3,), np.float32)
    e, h = out[..., 1], out[..., 0]
    stroma = codes == STROMA
    e[stroma] = (st.stroma_eosin * st.eosin_intensity * fibre_level * mottle)[stroma]
    h[stroma] = st.stroma_hematoxylin
    epi = codes == EPITHELIUM
    e[epi] = (st.epithelium_eosin * st.eosin_intensity * np.clip(mottle, 0.5, None))[epi]
    h[epi] = st.epithelium_hematoxylin
    mucin = codes == MUCIN
    residue = (1 - st.goblet_clarity) + 0.35 * strands
    e[mucin] = (st.epithelium_eosin * st.eosin_intensity * 0.5 * residue)[mucin]
    h[mucin] = (st.epithelium_hematoxylin * 1.5 * residue)[mucin]
    out[..., 2][codes == BLOOD] = st.blood_density
    e[codes == BLOOD] = st.stroma_eosin * st.eosin_intensity
    return np.clip(out, 0, None)


def layer_transmittance(textures: np.ndarray, od: Dict[str, np.ndarray], thickness: float) -> np.ndarray:
    """Beer-Lambert transmittance of each depth layer, (layers, H, W, 3) float32 in (0, 1]."""
    dz = thickness / textures.shape[0]
    absorbance = sum(textures[..., i, None] * od[name] for i, name in enumerate(STAINS))
    return np.exp(-LN10 * dz * absorbance).astype(np.float32)
