"""The scene model: everything the renderer and the labels need, as plain numpy arrays.

Frames: the *section frame* has x to the right of the image, y to its top and z towards the camera;
the slab is ``z0 <= z <= z1`` and the field of view is ``|x|, |y| <= field_um / 2``. The *tissue
frame* (u, v, w) has w along the crypt axes, pointing from the luminal surface (w = 0) into the
mucosa; ``tissue = origin + rotation @ section``. All lengths in micrometres.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Sequence, Type, TypeVar

import numpy as np

MAX_LOBES = 6
NOISE_TERMS = 6

# Tissue compartments: the values of masks/tissue/<i>.tif (goblet mucin is "mucin", tears "tear",
# red blood cells "blood", the wall and the plasma-filled lumen of a capillary "vessel").
OUTSIDE, STROMA, EPITHELIUM, LUMEN, MUCIN, RIP, BLOOD, VESSEL = range(8)
COMPARTMENT_NAMES = ("outside", "stroma", "epithelium", "lumen", "mucin", "tear", "blood", "vessel")
# Parts of a capillary (architecture.vessel_parts).
NO_VESSEL, VESSEL_LUMEN, VESSEL_WALL = range(3)


@dataclass(frozen=True, eq=False)
class Section:
    thickness: float  # slab thickness
    z0: float  # bottom of the slab (section frame)
    z1: float  # top of the slab, towards the camera
    depth: float  # depth of the slab centre below the luminal surface
    tilt_deg: float  # angle between the crypt axis and the slab normal
    azimuth_deg: float  # direction of that tilt
    origin: np.ndarray  # (3,) tissue coordinates of the section-frame origin
    rotation: np.ndarray  # (3, 3) section -> tissue
    field_um: float  # side of the square field of view
    margin_um: float  # the scene extends this far beyond the field

    def to_tissue(self, p: np.ndarray) -> np.ndarray:
        return self.origin + p @ self.rotation.T

    def to_section(self, q: np.ndarray) -> np.ndarray:
        return (q - self.origin) @ self.rotation


@dataclass(frozen=True, eq=False)
class Crypts:
    centre: np.ndarray  # (C, 2) axis position (u, v) at the luminal surface
    radius: np.ndarray  # (C,) basal radius
    lumen: np.ndarray  # (C,) lumen radius
    depth: float  # tube length below the surface; the end is a hemisphere
    warp_amp: np.ndarray  # (C, 2) meander amplitude of the axis in u and v
    warp_phase: np.ndarray  # (C, 2)
    wavelength: float  # meander wavelength
    wall: np.ndarray  # (C, K, 2) amplitude and phase of the angular harmonics k = 2 .. K+1
    lumen_shape: np.ndarray  # (C, 3) lumen folds: number of lobes, relative depth, phase
    surface: float  # thickness of the surface epithelium below w = 0
    surface_waves: np.ndarray  # (K, 4) rows (ku, kv, phase, amplitude um): undulation of the surface
    # (C, K, 2) amplitude (relative) and phase of the lumen's uneven outline, harmonics k = 1 .. K
    lumen_waves: np.ndarray
    # (C, K, 4) waves along the crypt (amplitude of widening, amplitude of turning in rad, wavenumber
    # per um, phase): the lumen's changes with depth
    lumen_meander: np.ndarray


@dataclass(frozen=True, eq=False)
class Cells:
    """One row per cell; ``cell_id`` is the scene-wide identity (1..N), stable across re-renders."""

    cell_id: np.ndarray  # (N,) int32
    cls: np.ndarray  # (N,) uint8 class id (CLASS_IDS)
    goblet: np.ndarray  # (N,) bool, epithelial cell carrying a mucin vacuole
    centre: np.ndarray  # (N, 3) section frame
    rotation: np.ndarray  # (N, 3, 3) local -> section
    lobe_count: np.ndarray  # (N,) int
    lobe_centre: np.ndarray  # (N, MAX_LOBES, 3) local
    lobe_axes: np.ndarray  # (N, MAX_LOBES, 3) semi-axes of each lobe
    curvature: np.ndarray  # (N,) bend of the nucleus about local z (1/um)
    noise: np.ndarray  # (N, NOISE_TERMS, 6) surface variation (see geometry.surface_noise)
    body_centre: np.ndarray  # (N, 3) local centre of the cell body
    body_axes: np.ndarray  # (N, 3) semi-axes of the cell body; zeros = no cytoplasm drawn

    def __len__(self) -> int:
        return len(self.cls)

    @classmethod
    def concat(cls, parts: Sequence["Cells"]) -> "Cells":
        """One table of all parts, in order, with scene-wide ids 1..N."""
        merged = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        merged["cell_id"] = np.arange(1, len(merged["cls"]) + 1, dtype=np.int32)
        return cls(**merged)

    def take(self, rows: np.ndarray) -> "Cells":
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})


@dataclass(frozen=True, eq=False)
class Ellipsoids:
    centre: np.ndarray  # (M, 3) section frame
    rotation: np.ndarray  # (M, 3, 3) local -> section
    axes: np.ndarray  # (M, 3) semi-axes

    @classmethod
    def concat(cls, parts: Sequence["Ellipsoids"]) -> "Ellipsoids":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class Vessels:
    """Capillaries as pieces of tube around densely sampled centrelines (samples
    ``vessels.VESSEL_STEP_UM`` apart along a piece; lumen and wall are constant along a piece). A
    point lies in a piece's lumen within ``lumen`` of its nearest centreline sample of that piece, in
    its wall within ``lumen + wall``; the capillaries are the union of the pieces (where a link
    meets a column, their lumens join)."""

    centre: np.ndarray  # (K, 3) centreline samples, section frame
    piece: np.ndarray  # (K,) int32: samples of one unbroken piece of tube are consecutive and share it
    lumen: np.ndarray  # (K,) lumen radius at the sample
    wall: np.ndarray  # (K,) wall thickness at the sample

    @classmethod
    def empty(cls) -> "Vessels":
        return cls(centre=np.zeros((0, 3)), piece=np.zeros(0, np.int32), lumen=np.zeros(0), wall=np.zeros(0))


@dataclass(frozen=True, eq=False)
class Vacuoles:
    """Goblet mucin: each goblet cell has a theca (a wedge-shaped cup between the nuclear palisade
    and the lumen) and a stem (a narrow neck between its neighbours' nuclei down to its own nucleus).

    In local coordinates (x along the outward crypt normal, towards the base; y around the crypt;
    z along the crypt axis) a point is inside when ``|z| < c`` and
    ``|x / a|**p + |y / (b * t * h)|**p <= 1`` with ``t = max(1 + taper * x / a, 0)`` and
    ``h = sqrt(1 - (z / c)**2)``: a superellipse of exponent ``p`` across the crypt (a rounded petal)
    whose width grows linearly towards the base (a wedge about the crypt axis, so that the cytoplasm
    strands between neighbouring petals keep their width), elliptic along the crypt.
    """

    centre: np.ndarray  # (M, 3) section frame
    rotation: np.ndarray  # (M, 3, 3) local -> section
    axes: np.ndarray  # (M, 3) semi-axes (a, b, c): radial, around the crypt at x = 0, along the axis
    taper: np.ndarray  # (M,) relative growth of the width from x = 0 to x = a
    exponent: np.ndarray  # (M,) superellipse exponent p (2: elliptic, larger: blunter ends)
    stem: np.ndarray  # (M,) bool: the neck of a goblet rather than its theca


@dataclass(frozen=True, eq=False)
class Rips:
    """Tears through the section: thin cracks along the zero set of an isotropic random field, kept
    where a second, smooth field marks a damaged patch, and clefts along the crypt walls."""

    waves: np.ndarray  # (K, 4) rows (kx, ky, phase, amplitude) of the crack field over (x, y)
    patch_waves: np.ndarray  # (K, 4) the patch field
    patch_threshold: float  # damaged where the patch field exceeds this value
    cleft_um: float  # greatest width of the retraction clefts along crypt walls inside damaged patches
    cleft_excess: float  # clefts open where the patch field exceeds patch_threshold by more than this
    fray_waves: np.ndarray  # (K, 4) the roughness field that varies the widths of cracks and clefts
    crack_um: float  # greatest width of the cracks (along the zero set of the crack field)
    crack_excess: float  # cracks open where the patch field exceeds patch_threshold by more than this


@dataclass(frozen=True, eq=False)
class SceneModel:
    seed: int
    section: Section
    crypts: Crypts
    cells: Cells
    mucin: Vacuoles  # goblet mucin
    blood: Ellipsoids  # red blood cells: extravasated ones first, then those in the capillaries
    rips: Rips
    vessels: Vessels  # capillaries
    config_json: str  # the scene part of the configuration that produced this model


_PARTS: Dict[str, Type[Any]] = {
    "section": Section, "crypts": Crypts, "cells": Cells, "mucin": Vacuoles,
    "blood": Ellipsoids, "rips": Rips, "vessels": Vessels,
}
T = TypeVar("T")


def _arrays(scene: SceneModel) -> Dict[str, np.ndarray]:
    out = {"seed": np.asarray(scene.seed, np.int64),
           "config_json": np.frombuffer(scene.config_json.encode(), np.uint8)}
    for part in _PARTS:
        obj = getattr(scene, part)
        for f in fields(obj):
            out[f"{part}.{f.name}"] = np.asarray(getattr(obj, f.name))
    return out


def save(scene: SceneModel, path: Path) -> None:
    """Write the scene as an ``.npz`` whose bytes depend only on its content (fixed zip dates)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in sorted(_arrays(scene).items()):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(arr, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    Path(path).write_bytes(buf.getvalue())


# Fields added later, and their values for scenes saved before, from the scene's arrays. Rips:
# clefts without a width (``cleft_excess``), tears with smooth edges, no cracks (theirs were
# hairlines by another rule). Crypts: lumens of even folds, the same at every depth.
FIELDS_BEFORE: Dict[str, Callable[[Dict[str, np.ndarray]], Any]] = {
    "rips.cleft_excess": lambda a: 0.0, "rips.fray_waves": lambda a: np.zeros((0, 4)),
    "rips.crack_um": lambda a: 0.0, "rips.crack_excess": lambda a: np.inf,
    "crypts.lumen_waves": lambda a: np.zeros((len(a["crypts.centre"]), 0, 2)),
    "crypts.lumen_meander": lambda a: np.zeros((len(a["crypts.centre"]), 0, 4)),
}


def load(path: Path) -> SceneModel:
    """Read a scene written by ``save``; arrays come back with their exact dtypes and values."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}

    def build(cls: Type[T], part: str) -> T:
        if part == "vessels" and f"{part}.centre" not in arrays:  # a scene saved before capillaries
            return Vessels.empty()  # type: ignore[return-value]
        kwargs = {}
        for f in fields(cls):
            key = f"{part}.{f.name}"
            if key not in arrays and key in FIELDS_BEFORE:  # a scene saved before the field was added
                kwargs[f.name] = FIELDS_BEFORE[key](arrays)
                continue
            a = arrays[key]
            kwargs[f.name] = a.item() if a.ndim == 0 else a
        return cls(**kwargs)

    return SceneModel(
        seed=int(arrays["seed"]),
        config_json=arrays["config_json"].tobytes().decode(),
        **{part: build(cls, part) for part, cls in _PARTS.items()},
    )

