"""Build the scene model of one sample from the configuration and its seed."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import partial
from typing import Callable, Optional, Tuple

import numpy as np

from ..classes import CLASS_IDS, NAMES
from ..config import ArctiqueConf, scene_part
from ..parallel import Background
from ..rng import stream
from .architecture import crypt_tree, sample_blood, sample_crypts, sample_rips, sample_section
from .epithelium import build_epithelium
from .model import Cells, Crypts, Ellipsoids, Rips, SceneModel, Section, Vessels
from .stroma import build_pericryptal, build_stroma
from .vessels import build_endothelium, capillary_blood, sample_vessels

logger = logging.getLogger(__name__)


def field_um(cfg: ArctiqueConf) -> float:
    """Side of the field of view: the image covers image_size * mpp micrometres."""
    return cfg.optics.image_size * cfg.optics.mpp


def scene_key(cfg: ArctiqueConf) -> str:
    """Everything besides the seed that shapes the scene; two configs with the same key give the same
    scene for a seed, so a saved scene can be re-rendered instead of rebuilt."""
    return json.dumps({"scene": scene_part(cfg), "field_um": field_um(cfg)}, sort_keys=True)


def build_scene(cfg: ArctiqueConf, seed: int) -> SceneModel:
    """Deterministic scene of ``seed``: crypts, section pose, capillaries, cells, mucin, blood and rips."""
    return add_stroma(cfg, build_tissue(cfg, seed))


def build_tissue(cfg: ArctiqueConf, seed: int, cores: int = 1,
                 beside: Optional[Callable[[Section, Crypts, Rips], None]] = None) -> SceneModel:
    """The scene of ``seed`` without its stroma cells: section pose, crypts and their epithelium,
    goblet mucin, capillaries with their endothelium and red cells, the pericryptal fibroblast sheath,
    extravasated blood and rips.
    Every compartment of the tissue is final here (stroma cells lie inside the stroma), so
    compartment maps can be made while ``add_stroma`` places the cells.

    Each part draws from its own named stream, so e.g. changing a stroma density leaves crypts,
    pose and epithelium as they were. The epithelium takes longest; the parts that need the crypts
    but not their epithelium are made beside it where ``cores`` (``optics.threads``) allows
    (``parallel.Background``), and ``beside``, given the section, crypts and tears, may start more.
    """
    streams = partial(stream, seed)
    t, c = cfg.tissue, cfg.cells
    section = sample_section(t.section, field_um(cfg), t.margin_um, t.crypt.spacing_um, streams("section"))
    crypts = sample_crypts(t.crypt, t.surface, section, _z_pad(cfg), streams("crypts"))
    tree = crypt_tree(crypts)
    rips = sample_rips(t.rips, section, crypts, tree, streams("rips"))
    capillaries = Background(f"capillaries of sample {seed}", cores, _capillaries, cfg, seed, section, crypts)
    if beside is not None:
        beside(section, crypts, rips)
    try:
        epi, mucin = build_epithelium(
            crypts, section, tree, t.epithelium, c.types.EPI, c.nucleus_scale.get("EPI", 1.0),
            streams("epithelium/place"), streams("epithelium/shape"), streams("epithelium/goblet"))
        vessels, lining, blood = capillaries.result()
    finally:
        capillaries.cancel()
    return SceneModel(seed=seed, section=section, crypts=crypts, cells=Cells.concat([epi, lining]),
                      mucin=mucin, blood=blood, rips=rips, vessels=vessels, config_json=scene_key(cfg))


def _capillaries(cfg: ArctiqueConf, seed: int, section: Section, crypts: Crypts) -> Tuple[Vessels, Cells, Ellipsoids]:
    """The parts of ``build_tissue`` placed against the crypts but not their epithelium: the
    capillaries, the flat nuclei lining the lamina propria's surfaces (endothelium, then the
    pericryptal sheath clear of it) and the blood (extravasated and in capillaries)."""
    streams = partial(stream, seed)
    t, c = cfg.tissue, cfg.cells
    tree = crypt_tree(crypts)
    vessels = sample_vessels(t.vessels, section, crypts, tree, _z_pad(cfg), streams("vessels"))
    endothelium = build_endothelium(t.vessels.endothelium, c.types.FIB, c.nucleus_scale.get("FIB", 1.0),
                                    vessels, section, streams("vessels/endothelium"))
    sheath = build_pericryptal(t.pericryptal, c.types.FIB, c.nucleus_scale.get("FIB", 1.0), crypts, section, tree,
                               vessels, endothelium, streams("pericryptal"))
    extravasated = sample_blood(t.blood, section, crypts, tree, vessels, streams("blood"))
    blood = Ellipsoids.concat([extravasated, capillary_blood(t.vessels, t.blood, vessels, streams("vessels/blood"))])
    return vessels, Cells.concat([endothelium, sheath]), blood


def add_stroma(cfg: ArctiqueConf, tissue: SceneModel) -> SceneModel:
    """The scene of ``build_tissue`` with its lamina propria cells, placed clear of the epithelium,
    the capillaries and the flat nuclei lining them and the crypts; cells are ordered epithelium,
    stroma, lining (endothelium, pericryptal sheath)."""
    s = tissue
    epi = s.cells.take(np.flatnonzero(s.cells.cls == CLASS_IDS["EPI"]))
    lining = s.cells.take(np.flatnonzero(s.cells.cls != CLASS_IDS["EPI"]))
    stroma = build_stroma(cfg.cells, s.section, s.crypts, crypt_tree(s.crypts), partial(stream, s.seed), s.vessels,
                          lining)
    cells = Cells.concat([epi, stroma, lining])
    logger.debug("scene %d: %d cells (%d epithelial, %d lining), %d goblets, %d capillary samples",
                 s.seed, len(cells), len(epi), len(lining), len(s.mucin.centre), len(s.vessels.centre))
    return replace(s, cells=cells)


def scene_rows(tissue: SceneModel, scene: SceneModel) -> np.ndarray:
    """The row in ``scene.cells`` of each row of ``tissue.cells``, where ``scene`` is ``add_stroma``
    of ``tissue``: the stroma cells come after the epithelial ones, before the endothelial ones."""
    rows = np.arange(len(tissue.cells))
    epithelial = int(np.count_nonzero(tissue.cells.cls == CLASS_IDS["EPI"]))
    return np.where(rows < epithelial, rows, rows + len(scene.cells) - len(tissue.cells))


def _z_pad(cfg: ArctiqueConf) -> float:
    """How far beyond the slab crypts and capillaries are made: the largest cell or red cell reaches that far."""
    return max(max(getattr(cfg.cells.types, n).length_um[1] for n in NAMES) * 2, cfg.tissue.blood.diameter_um)
