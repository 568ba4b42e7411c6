"""Named, reproducible splits of a dataset's samples (``train=0.8,val=0.1,test=0.1``): the reader's
``split=`` and ``arctique-export --split`` cut the same samples from the same seed, and every tile
of a field stays in its sample's split."""

from __future__ import annotations

import math
from typing import Dict, List

from ..rng import stream
from .dataset import folder_name


def parse_split(text: str, option: str = "--split") -> Dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` -> {"train": 0.8, ...}; fractions in (0, 1] summing to 1; errors
    name ``option``."""
    fractions: Dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            fraction = float(value)
        except ValueError:
            raise ValueError(f"{option}: '{part}' is not NAME=FRACTION (e.g. train=0.8,val=0.1,test=0.1)") from None
        if not name or name in fractions or not 0 < fraction <= 1:
            raise ValueError(f"{option}: '{part}' needs a new name and a fraction in (0, 1]")
        fractions[folder_name(name, option)] = fraction
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"{option}: fractions must sum to 1, got {sum(fractions.values()):g} ({text})")
    return fractions


def assign_splits(indices: List[int], fractions: Dict[str, float], seed: int) -> Dict[int, str]:
    """Sample index -> split: the samples shuffled by ``seed`` (stream ``export/split``) and cut in
    the given order into parts of round(fraction x n), remainders to the largest fractional parts."""
    n = len(indices)
    exact = [f * n for f in fractions.values()]
    sizes = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: (-(exact[k] - sizes[k]), k))
    for k in by_remainder[: n - sum(sizes)]:
        sizes[k] += 1
    order = [indices[k] for k in stream(seed, "export/split").permutation(n)]
    out, start = {}, 0
    for name, size in zip(fractions, sizes):
        out.update({i: name for i in order[start:start + size]})
        start += size
    return out
