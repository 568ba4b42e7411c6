"""Build the scene model of one sample from the configuration and its seed."""

from __future__ import annotations

import json
import logging
from functools import partial

import numpy as np

from ..config import ArctiqueConf, scene_part
from ..rng import stream
from .architecture import crypt_tree, sample_blood, sample_crypts, sample_rips, sample_section
from .epithelium import build_epithelium
from .model import CLASS_IDS, Cells, SceneModel
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
    z_pad = max(max(getattr(c.types, n).length_um[1] for n in CLASS_IDS) * 2, t.blood.diameter_um)
    crypts = sample_crypts(t.crypt, section, z_pad, streams("crypts"))
    tree = crypt_tree(crypts)
    epi, mucin = build_epithelium(
        crypts, section, t.epithelium, c.types.EPI, c.nucleus_scale.get("EPI", 1.0),
        streams("epithelium/place"), streams("epithelium/shape"), streams("epithelium/goblet"))
    stroma = build_stroma(c, section, crypts, tree, streams)
    n_epi = len(epi["centre"])
    epi["cls"] = np.full(n_epi, CLASS_IDS["EPI"], np.uint8)
    if stroma:
        stroma["cls"] = np.array([CLASS_IDS[n] for n in stroma.pop("cls_name")], np.uint8)
        stroma["goblet"] = np.zeros(len(stroma["cls"]), bool)
        parts = [epi, stroma]
    else:
        parts = [epi]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in epi}
    n = len(cols["cls"])
    cells = Cells(
        cell_id=np.arange(1, n + 1, dtype=np.int32), cls=cols["cls"], goblet=cols["goblet"],
        centre=cols["centre"], rotation=cols["rotation"], lobe_count=cols["lobe_count"].astype(np.int32),
        lobe_centre=cols["lobe_centre"], lobe_axes=cols["lobe_axes"], curvature=cols["curvature"],
        noise=cols["noise"], body_centre=cols["body_centre"], body_axes=cols["body_axes"],
    )
    rips = sample_rips(t.rips.strength, t.rips.scale_um, t.rips.elongation, section, streams("rips"))
    blood = sample_blood(t.blood.strength, t.blood.diameter_um, section, crypts, tree, streams("blood"))
    logger.debug("scene %d: %d cells (%d epithelial), %d goblets", seed, n, n_epi, len(mucin.centre))
    return SceneModel(seed=seed, section=section, crypts=crypts, cells=cells, mucin=mucin,
                      blood=blood, rips=rips, config_json=scene_key(cfg))
