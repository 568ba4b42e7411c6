"""Build the scene model of one sample from the configuration and its seed."""

from __future__ import annotations

import json
import logging
from functools import partial

from ..classes import NAMES
from ..config import ArctiqueConf, scene_part
from ..rng import stream
from .architecture import crypt_tree, sample_blood, sample_crypts, sample_rips, sample_section
from .epithelium import build_epithelium
from .model import Cells, SceneModel
from .stroma import build_stroma

logger = logging.getLogger(__name__)


def field_um(cfg: ArctiqueConf) -> float:
    """Side of the field of view: the image covers image_size * mpp micrometres."""
    return cfg.optics.image_size * cfg.optics.mpp


def scene_key(cfg: ArctiqueConf) -> str:
    """Everything besides the seed that shapes the scene; two configs with the same key give the same
    scene for a seed, so a saved scene can be re-rendered instead of rebuilt."""
    return json.dumps({"scene": scene_part(cfg), "field_um": field_um(cfg)}, sort_keys=True)


def build_scene(cfg: ArctiqueConf, seed: int) -> SceneModel:
    """Deterministic scene of ``seed``: crypts, section pose, cells, mucin, blood and rips.

    Each part draws from its own named stream, so e.g. changing a stroma density leaves crypts,
    pose and epithelium as they were.
    """
    streams = partial(stream, seed)
    t, c = cfg.tissue, cfg.cells
    section = sample_section(t.section, field_um(cfg), t.margin_um, t.crypt.spacing_um, streams("section"))
    z_pad = max(max(getattr(c.types, n).length_um[1] for n in NAMES) * 2, t.blood.diameter_um)
    crypts = sample_crypts(t.crypt, t.surface, section, z_pad, streams("crypts"))
    tree = crypt_tree(crypts)
    epi, mucin = build_epithelium(
        crypts, section, tree, t.epithelium, c.types.EPI, c.nucleus_scale.get("EPI", 1.0),
        streams("epithelium/place"), streams("epithelium/shape"), streams("epithelium/goblet"))
    stroma = build_stroma(c, section, crypts, tree, streams)
    cells = Cells.concat([epi, stroma])
    rips = sample_rips(t.rips, section, crypts, tree, streams("rips"))
    blood = sample_blood(t.blood.strength, t.blood.diameter_um, section, crypts, tree, streams("blood"))
    logger.debug("scene %d: %d cells (%d epithelial), %d goblets", seed, len(cells), len(epi), len(mucin.centre))
    return SceneModel(seed=seed, section=section, crypts=crypts, cells=cells, mucin=mucin,
                      blood=blood, rips=rips, config_json=scene_key(cfg))
