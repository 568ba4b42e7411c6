"""The one table of nucleus classes: ids, names, preview colours and the codes of public datasets.

Config validation, the scene build, appearance, labels, metadata and previews all read this table,
so a class is added or recoded here only. Codes of other datasets:

* Lizard / CoNIC: 1 neutrophil, 2 epithelial, 3 lymphocyte, 4 plasma, 5 eosinophil, 6 connective;
* PanNuke channel: 0 neoplastic, 1 inflammatory, 2 connective, 3 dead, 4 epithelial (5 background);
* the reference's released v3 data: 1 epithelial, 2 plasma, 3 lymphocyte, 4 eosinophil,
  5 fibroblast (it has no neutrophils: 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np


@dataclass(frozen=True)
class CellClass:
    id: int  # semantic mask value
    name: str  # short name used in config keys and tables
    long_name: str
    colour: Tuple[int, int, int]  # preview outline colour (RGB)
    lizard: int  # Lizard / CoNIC class code
    pannuke: int  # PanNuke mask channel
    reference: int  # the reference's v3 class code (0: absent there)
    stroma: bool  # lives in the lamina propria (placed by density and ratio)


CLASSES: Tuple[CellClass, ...] = (
    CellClass(1, "EPI", "epithelial", (255, 200, 0), lizard=2, pannuke=4, reference=1, stroma=False),
    CellClass(2, "PLA", "plasma cell", (0, 160, 255), lizard=4, pannuke=1, reference=2, stroma=True),
    CellClass(3, "LYM", "lymphocyte", (40, 220, 40), lizard=3, pannuke=1, reference=3, stroma=True),
    CellClass(4, "EOS", "eosinophil", (255, 40, 40), lizard=5, pannuke=1, reference=4, stroma=True),
    CellClass(5, "FIB", "fibroblast", (200, 0, 255), lizard=6, pannuke=2, reference=5, stroma=True),
    CellClass(6, "NEU", "neutrophil", (255, 140, 0), lizard=1, pannuke=1, reference=0, stroma=True),
)

BY_NAME: Dict[str, CellClass] = {c.name: c for c in CLASSES}
BY_ID: Dict[int, CellClass] = {c.id: c for c in CLASSES}
NAMES: Tuple[str, ...] = tuple(c.name for c in CLASSES)
STROMA_NAMES: Tuple[str, ...] = tuple(c.name for c in CLASSES if c.stroma)
CLASS_IDS: Dict[str, int] = {c.name: c.id for c in CLASSES}
CLASS_NAMES: Dict[int, str] = {c.id: c.name for c in CLASSES}


def class_table() -> Dict[str, str]:
    """Semantic mask values and their names, as written into each sample's metadata."""
    return {"0": "background", **{str(c.id): c.name for c in CLASSES}}


def lookup(attribute: str, background: int = 0) -> np.ndarray:
    """Array mapping our class id to ``attribute`` (e.g. ``lizard``); index 0 is background."""
    out = np.full(max(BY_ID) + 1, background, np.int64)
    for c in CLASSES:
        out[c.id] = getattr(c, attribute)
    return out


def colours() -> np.ndarray:
    """(max id + 1, 3) uint8 preview colours, black for background."""
    out = np.zeros((max(BY_ID) + 1, 3), np.uint8)
    for c in CLASSES:
        out[c.id] = c.colour
    return out
