"""The feature points of Cycles' Voronoi texture, in numpy.

Cycles (4.5) places one feature point in every unit cell ``c`` of the texture space, at
``c + hash_float3_to_float3(c)`` (randomness 1): Jenkins' lookup3 hash of the bit patterns of the
cell's float coordinates. Its F1 distance is below ``d < 1`` exactly where some feature point lies
within ``d`` (every such point lies in the 3 x 3 x 3 cells Cycles searches). So a shader that needs
only "closer than d to a feature point" can test the few points a cell can reach instead of
evaluating the texture (27 cells and 81 hashes) at every volume step.
"""

from __future__ import annotations

import numpy as np

_INIT = np.uint32(0xDEADBEEF)


def _rot(x: np.ndarray, k: int) -> np.ndarray:
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def _mix(a, b, c):
    a = a - c; a ^= _rot(c, 4); c = c + b  # noqa: E702  (lookup3's mix, step for step)
    b = b - a; b ^= _rot(a, 6); a = a + c  # noqa: E702
    c = c - b; c ^= _rot(b, 8); b = b + a  # noqa: E702
    a = a - c; a ^= _rot(c, 16); c = c + b  # noqa: E702
    b = b - a; b ^= _rot(a, 19); a = a + c  # noqa: E702
    c = c - b; c ^= _rot(b, 4); b = b + a  # noqa: E702
    return a, b, c


def _final(a, b, c):
    c ^= b; c = c - _rot(b, 14)  # noqa: E702  (lookup3's final)
    a ^= c; a = a - _rot(c, 11)  # noqa: E702
    b ^= a; b = b - _rot(a, 25)  # noqa: E702
    c ^= b; c = c - _rot(b, 16)  # noqa: E702
    a ^= c; a = a - _rot(c, 4)  # noqa: E702
    b ^= a; b = b - _rot(a, 14)  # noqa: E702
    c ^= b; c = c - _rot(b, 24)  # noqa: E702
    return c


def _to_unit(h: np.ndarray) -> np.ndarray:
    """Cycles' ``uint_to_float_incl``: the hash as a float32 in [0, 1]."""
    return h.astype(np.float32) * np.float32(1.0 / 4294967296.0)


def _hash3(x, y, z):
    a = b = c = np.full(x.shape, _INIT + np.uint32((3 << 2) + 13), np.uint32)
    return _to_unit(_final(a + x, b + y, c + z))


def _hash4(x, y, z, w):
    init = np.full(x.shape, _INIT + np.uint32((4 << 2) + 13), np.uint32)
    a, b, c = _mix(init + x, init + y, init + z)
    return _to_unit(_final(a + w, b, c))


def feature_points(cells: np.ndarray) -> np.ndarray:
    """(N, 3) float32 feature points of the integer texture cells ``cells`` (N, 3)."""
    k = np.ascontiguousarray(cells, np.float32) + np.float32(0)  # -0.0 becomes +0.0, as in Cycles
    x, y, z = (k[:, i].view(np.uint32) for i in range(3))
    one, two = (np.full(len(k), v, np.float32).view(np.uint32) for v in (1.0, 2.0))
    with np.errstate(over="ignore"):
        offset = np.column_stack([_hash3(x, y, z), _hash4(x, y, z, one), _hash4(x, y, z, two)])
    return k + offset
