"""Named, independent random streams derived from one root seed.

Every subsystem asks for its own stream by name, so adding draws in one subsystem never shifts the
draws of another (the reference re-seeded global state, which correlated unrelated parameters).
"""

from __future__ import annotations

import hashlib

import numpy as np


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def stream(seed: int, name: str) -> np.random.Generator:
    """Generator for ``(seed, name)``; names may be hierarchical, e.g. ``"cells/LYM"``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _name_key(name)])))
