"""Typed configuration schema, registered in Hydra's ConfigStore, and its validation.

Every length is in micrometres (suffix ``_um``). A two-element list ``[lo, hi]`` is a range that is
sampled uniformly per sample (give ``[x, x]`` to fix it). Which node a key lives in says what it
changes:

* ``seed``, ``tissue``, ``cells``: the scene model (geometry, cell population, labels);
* ``n_samples``, ``shard``: which seeds this job renders;
* ``nuclei``, ``stain``, ``optics``, ``scanner``: appearance only (a sweep over them re-renders identical geometry);
* ``noise``: label-noise variants written beside the clean labels;
* ``output``: where and what is written.

Each field declares its allowed values once, in its metadata (``_num``, ``_span``, ``_each``,
``_choice``); ``validate()`` checks every field from those declarations and adds only the checks
that relate several fields.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.resources
import json
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING

from .classes import NAMES, STROMA_NAMES


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message names key, value and range."""


def _default(value: Any) -> Dict[str, Any]:
    if isinstance(value, (list, dict)):
        return {"default_factory": lambda: type(value)(value)}
    return {"default": value}


def _num(default: float, lo: float, hi: float, appearance: bool = False, or_zero: bool = False) -> Any:
    """A number allowed in [lo, hi] (``or_zero``: also exactly 0, meaning "none"). ``appearance``
    marks a per-class value that changes how a class renders, never the scene: it is left out of
    ``scene_part`` and re-rendering keeps geometry and labels."""
    return field(**_default(default), metadata={"range": (lo, hi), "appearance": appearance, "or_zero": or_zero})


def _look(default: float, lo: float, hi: float) -> Any:
    return _num(default, lo, hi, appearance=True)


def _span(default: List[float], lo: float, hi: float) -> Any:
    """A range ``[min, max]`` sampled per sample, both ends in [lo, hi]."""
    return field(**_default(default), metadata={"range": (lo, hi), "length": 2, "ordered": True})


def _each(default: Any, lo: float, hi: float, length: Optional[int] = None,
          keys: Optional[Sequence[str]] = None) -> Any:
    """A list (of ``length`` values) or a mapping (with ``keys`` among the given names; nested
    mappings alike) whose every value is in [lo, hi]."""
    return field(**_default(default), metadata={"range": (lo, hi), "length": length, "keys": keys})


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


# --------------------------------------------------------------------------------------------- tissue


@dataclass
class CryptConf:
    spacing_um: float = _num(84.0, 20, 1000)  # centre distance of neighbouring crypts (hexagonal lattice)
    spacing_jitter: float = _num(0.08, 0, 0.4)  # random displacement of crypt centres, fraction of spacing
    radius_um: float = _num(35.0, 5, 300)  # outer (basal) radius of a crypt
    radius_jitter: float = _num(0.25, 0, 0.5)  # per-crypt relative radius variation (uniform, +-)
    # least stroma between the basal walls of neighbouring crypts (drawn radii, round, straight):
    # a crypt drawn too wide for its place is narrowed to keep it
    gap_um: float = _num(8.0, 0, 500)
    lumen_radius_um: float = _num(5.0, 0.5, 150)  # mean radius of the lumen (GlaS healthy: 5-15 um across)
    lumen_lobes: List[int] = _span([2, 2], 2, 12)  # folds of the lumen (2: a slit)
    lumen_fold: List[float] = _span([0.2, 0.5], 0, 0.9)  # relative depth of the folds
    # relative amplitude of the uneven outline of a lumen (harmonics 1-4, the k-th up to 1/k of it;
    # the first moves it off the axis): 0 the even slit or star of its folds
    lumen_roughness: float = _num(0.8, 0, 1)
    # along the crypt the lumen widens and narrows by up to this share of its radius and its folds
    # turn by up to this share of a half turn (0: the same outline at every depth, a straight white
    # blade where a crypt is cut lengthwise) ...
    lumen_meander: float = _num(1.0, 0, 1)
    lumen_meander_um: float = _num(40.0, 5, 1000)  # ... over about this length
    depth_um: float = _num(420.0, 20, 2000)  # length of the tube below the luminal surface (its end is rounded)
    warp_um: float = _num(5.0, 0, 250)  # amplitude of the meander of the crypt axis (also <= spacing_um / 4)
    warp_wavelength_um: float = _num(160.0, 10, 2000)  # wavelength of that meander
    wall_roughness: float = _num(0.15, 0, 0.3)  # relative amplitude of the angular modulation of the wall


@dataclass
class SurfaceConf:
    thickness_um: float = _num(18.0, 0, 60)  # height of the surface epithelium lining the gut lumen
    undulation_um: float = _num(4.0, 0, 30)  # amplitude of the surface's gentle waves
    wavelength_um: float = _num(90.0, 5, 1000)  # their wavelength


@dataclass
class SectionConf:
    thickness_um: List[float] = _span([3.0, 5.0], 0.5, 30)  # slab thickness range
    depth_um: List[float] = _span([40.0, 340.0], 0, 2000)  # slab centre below the surface (<= crypt depth)
    tilt_deg: List[float] = _span([0.0, 90.0], 0, 90)  # crypt axis vs. slab normal


@dataclass
class EpitheliumConf:
    # centre distance of neighbouring epithelial nuclei around the wall (5.5: a crowded basal palisade)
    spacing_um: float = _num(5.5, 1, 30)
    row_spacing_um: float = _num(6.5, 1, 30)  # ... and along the crypt axis
    # columns around the wall alternate along the crypt axis by this share of a row (0.5: a brick
    # pattern): ring neighbours then lie at different heights, and their nuclei may be wider than
    # the room between them around the wall (crowded, pseudo-stratified)
    column_offset: float = _num(0.5, 0, 0.5)
    # every cell moved by up to these shares of its pitch around the wall and of a row along it (the
    # rounded end: around only), so that a wall cut tangentially shows a mosaic, not a lattice; the
    # room of each nucleus is measured to its moved neighbours
    ring_jitter: float = _num(0.15, 0, 0.3)
    row_jitter: float = _num(0.15, 0, 0.3)
    basal_gap_um: float = _num(0.8, 0, 10)  # gap between the basement boundary and the nucleus
    # nuclei sit up to this far from the base (pseudo-stratified; 1: one basal band under the thecae)
    stratification_um: float = _num(1.0, 0, 10)
    # fraction of epithelial cells that are goblet cells (0.35: a crypt cut across shows a ring of
    # about a dozen rounded thecae, as in GlaS healthy colon; more crowd them into radial petals)
    goblet_fraction: float = _num(0.35, 0, 1)
    goblet_length_um: List[float] = _span([8.0, 12.0], 1, 40)  # radial extent of a theca towards the lumen
    goblet_width_um: List[float] = _span([10.0, 14.0], 1, 40)  # greatest width of a theca around the crypt
    goblet_fill: float = _num(0.95, 0.3, 1)  # a theca spans this share of the angle between goblets ...
    goblet_strand_um: float = _num(1.2, 0, 10)  # ... less this strand of cytoplasm between neighbouring thecae
    goblet_stagger: float = _num(0.0, 0, 0.5)  # goblets of a ring turned by this share of their angle from the last
    # each goblet moved around its ring by up to half this share of the angle between goblets (0: equal
    # angles, a flower in cross-section; real thecae sit unevenly)
    goblet_jitter: float = _num(0.6, 0, 1)
    goblet_height_um: float = _num(9.0, 1, 40)  # theca extent along the crypt (elliptic; > row_spacing_um: beads)
    goblet_exponent: float = _num(2.0, 2, 12)  # outline of a theca across the crypt: 2 elliptic, larger boxier
    # share of the wedge kept: 1 widens a theca towards the base like the angle between goblets (even
    # strands, petals), 0 keeps its width (the rounded ovals of GlaS; with more taper a crypt cut
    # across reads as a flower of petals)
    goblet_taper: float = _num(0.0, 0, 1)
    # how far a theca reaches down between the nuclei of its neighbours, in shares of their half
    # length: 0 keeps it apical of the nuclear palisade, without a mucin stem, 1 to their middle;
    # 0.8: a crypt cut across shows a rosette of thecae reaching into the palisade, as in GlaS
    goblet_reach: float = _num(0.8, 0, 1)


@dataclass
class RipsConf:
    strength: float = _num(0.005, 0, 0.5)  # share of the field torn open (white tears)
    scale_um: float = _num(45.0, 5, 500)  # spacing of the crack network
    patch_um: float = _num(60.0, 5, 1000)  # size of the damaged patches that carry cracks
    cleft_um: float = _num(2.0, 0, 10)  # greatest width of the retraction clefts along crypt walls in damaged patches
    # greatest width of the cracks, which open in the most damaged parts first (wider only when the
    # share torn needs more than the whole network at this width)
    crack_um: float = _num(2.0, 0.1, 20)
    fray_um: float = _num(3.0, 0.5, 100, or_zero=True)  # finest scale of the roughness of tear edges (0: smooth)


@dataclass
class BloodConf:
    strength: float = _num(0.1, 0, 20)  # extravasated red blood cells per 1000 um^2 of stroma in the section
    diameter_um: float = _num(7.5, 2, 20)  # red blood cell diameter
    thickness_um: float = _num(2.2, 0.5, 5)  # red blood cell thickness (the disc's thickest, near its rim)
    # 0: an oblate ellipsoid; 1: the biconcave disc of a human red cell (Evans and Fung), a third as
    # thick in the middle as at the rim, the central pallor of a red cell seen face-on
    biconcavity: float = _look(1.0, 0, 1)


@dataclass
class EndotheliumConf:
    """Flat, elongated endothelial nuclei lying in a capillary wall, long axis along the capillary;
    labelled as connective-tissue nuclei (class FIB), as Lizard / CoNIC count them."""

    spacing_um: float = _num(16.0, 2, 500)  # mean distance along a capillary between endothelial nuclei
    length_um: List[float] = _span([9.0, 14.0], 2, 40)  # extent along the capillary
    width_um: List[float] = _span([2.6, 3.6], 0.5, 10)  # extent around the capillary
    thickness_um: List[float] = _span([1.3, 1.8], 0.3, 5)  # radial extent (they bulge slightly into the lumen)


@dataclass
class VesselsConf:
    """Capillaries of the lamina propria: a network between the crypts, of tubes along the stroma
    columns where three crypts meet and of links across the stroma between two neighbouring crypts;
    a thin wall, endothelial nuclei in it, rows of red blood cells in the lumen."""

    column_fraction: float = _num(0.5, 0, 1)  # share of the stroma columns between three crypts with a capillary along them
    # mean distance along the crypts between capillaries crossing the stroma between two crypts; 0 = none
    link_spacing_um: float = _num(70.0, 5, 5000, or_zero=True)
    lumen_um: List[float] = _span([5.0, 9.0], 1, 40)  # lumen diameter, per capillary
    wall_um: List[float] = _span([0.6, 1.0], 0.1, 5)  # wall thickness, per capillary
    meander_um: float = _num(4.0, 0, 30)  # amplitude of the winding of a capillary
    meander_wavelength_um: float = _num(50.0, 5, 1000)  # wavelength of the winding of the columns
    clearance_um: float = _num(2.0, 0, 30)  # least gap between a capillary wall and the epithelium
    rbc_fill: List[float] = _span([0.2, 0.6], 0, 1)  # share of a capillary's length filled with rows of red cells
    rbc_row_um: List[float] = _span([8.0, 24.0], 1, 1000)  # length of one row of red cells
    rbc_packing: float = _num(0.5, 0.3, 3)  # centre distance of neighbouring red cells in a row / their thickness
    rbc_tilt_deg: float = _num(10.0, 0, 80)  # greatest tilt of a red cell's disc against the capillary's cross-section
    endothelium: EndotheliumConf = field(default_factory=EndotheliumConf)


@dataclass
class PericryptalConf:
    """The pericryptal fibroblast sheath: flat, elongated nuclei lying on the outside of the crypts'
    basement boundary, long axis at any angle in the wall (crescents hugging a crypt cut across,
    spindles along one cut lengthwise); labelled as connective-tissue nuclei (class FIB)."""

    # nuclei drawn per 1000 um^2 of crypt tube wall (0 = none); those that would touch one drawn
    # before are left out, so the sheath fills up: 4 keeps about 2.5
    density: float = _num(4.0, 0, 50)
    gap_um: float = _num(0.6, 0, 10)  # between the basement boundary and the nucleus
    length_um: List[float] = _span([10.0, 16.0], 2, 40)  # longest extent, in the wall
    width_um: List[float] = _span([3.0, 4.5], 0.5, 10)  # extent across that, in the wall
    thickness_um: List[float] = _span([1.2, 1.8], 0.3, 5)  # radial extent


@dataclass
class TissueConf:
    crypt: CryptConf = field(default_factory=CryptConf)
    surface: SurfaceConf = field(default_factory=SurfaceConf)
    section: SectionConf = field(default_factory=SectionConf)
    epithelium: EpitheliumConf = field(default_factory=EpitheliumConf)
    rips: RipsConf = field(default_factory=RipsConf)
    blood: BloodConf = field(default_factory=BloodConf)
    vessels: VesselsConf = field(default_factory=VesselsConf)
    pericryptal: PericryptalConf = field(default_factory=PericryptalConf)
    margin_um: float = _num(8.0, 0, 100)  # scene extends this far beyond the field of view (cells cut by the border)


# ---------------------------------------------------------------------------------------------- cells


@dataclass
class CellTypeConf:
    """Everything that makes one class look like itself: shape, size, cytoplasm, stain and texture."""

    length_um: List[float] = _span([6.0, 7.0], 1, 60)  # longest nucleus extent
    elongation: List[float] = _span([1.0, 1.2], 1, 10)  # longest / shortest extent
    lobes: List[int] = _span([1, 1], 1, 6)  # number of nuclear lobes (range)
    bend_deg: float = _num(0.0, 0, 120)  # maximal bend of the nucleus along its long axis
    shape_noise: float = _num(0.06, 0, 0.3)  # relative amplitude of the per-instance surface variation
    # spatial frequency range of that variation, radians per unit of direction: low values bend the
    # outline, high values dent it (real nuclei are notched)
    shape_frequency: List[float] = _span([1.5, 3.5], 0.5, 8)
    cytoplasm_scale: float = _num(0.0, 1.05, 4, or_zero=True)  # cell body size / nucleus size; 0 = no cytoplasm
    eccentricity: float = _num(0.0, 0, 1)  # offset of the nucleus in its cell, fraction of the free space
    # Appearance (OD per um of path, at nuclei.intensity = 1 and stain.eosin_intensity = 1):
    hematoxylin: float = _look(1.0, 0, 5)  # nuclear hematoxylin
    chromatin: float = _look(1.0, 0, 2)  # multiplies nuclei.chromatin_contrast (coarse chromatin)
    rim: float = _look(0.0, 0, 3)  # chromatin moved to the nuclear membrane: membrane / interior - 1 (0 even)
    nucleoli: float = _look(0.0, 0, 3)  # extra hematoxylin in small nucleoli, relative
    cytoplasm_eosin: float = _look(0.0, 0, 5)
    cytoplasm_hematoxylin: float = _look(0.0, 0, 5)
    granules: float = _look(0.0, 0, 1)  # share of the cytoplasm eosin packed into coarse granules
    hof: float = _look(0.0, 0, 1)  # pale zone beside the nucleus (plasma-cell Golgi), relative


def _type(**kwargs: Any) -> Any:
    return field(default_factory=lambda: CellTypeConf(**kwargs))


@dataclass
class CellTypesConf:
    EPI: CellTypeConf = _type(
        length_um=[8.0, 11.5], elongation=[1.1, 1.5], shape_noise=0.14, shape_frequency=[3.5, 7.0],
        hematoxylin=1.25, chromatin=1.0, rim=0.8, nucleoli=0.8)
    PLA: CellTypeConf = _type(
        length_um=[6.0, 7.6], elongation=[1.05, 1.3], shape_noise=0.12, shape_frequency=[3.0, 6.0],
        cytoplasm_scale=1.5, eccentricity=0.8, hematoxylin=0.95, chromatin=1.5, rim=0.8,
        cytoplasm_eosin=0.2, cytoplasm_hematoxylin=0.1, hof=0.35)
    LYM: CellTypeConf = _type(
        length_um=[5.8, 7.2], elongation=[1.0, 1.15], shape_noise=0.12, shape_frequency=[3.0, 6.0],
        cytoplasm_scale=1.12,
        hematoxylin=1.0, chromatin=0.6, rim=0.3, cytoplasm_eosin=0.4, cytoplasm_hematoxylin=0.06)
    EOS: CellTypeConf = _type(
        length_um=[7.7, 9.9], elongation=[1.5, 1.9], lobes=[2, 2], shape_noise=0.08,
        cytoplasm_scale=1.55, hematoxylin=0.95, chromatin=0.7, rim=0.4, cytoplasm_eosin=0.6,
        cytoplasm_hematoxylin=0.0, granules=0.7)
    FIB: CellTypeConf = _type(
        length_um=[11.0, 18.0], elongation=[4.0, 6.5], bend_deg=50.0, shape_noise=0.1,
        hematoxylin=1.4, chromatin=0.5, rim=0.3)
    NEU: CellTypeConf = _type(
        length_um=[8.8, 11.0], elongation=[1.3, 1.7], lobes=[3, 4], shape_noise=0.08,
        cytoplasm_scale=1.4, hematoxylin=0.95, chromatin=0.6, rim=0.3, cytoplasm_eosin=0.22,
        cytoplasm_hematoxylin=0.03)


@dataclass
class CellsConf:
    stroma_density: float = _num(1.2, 0, 10)  # stroma cells per 1000 um^3 of lamina propria (all types)
    # relative abundance of the stroma types; normalised, not all zero
    ratios: Dict[str, float] = _each({"PLA": 0.45, "LYM": 1.2, "EOS": 0.03, "FIB": 0.5, "NEU": 0.02},
                                     0, 1000, keys=STROMA_NAMES)
    # slider: multiplies every size of that type's nuclei
    nucleus_scale: Dict[str, float] = _each({name: 1.0 for name in NAMES}, 0.5, 1.5, keys=NAMES)
    min_gap_um: float = _num(0.1, 0, 5)  # minimal distance between the collision shells of two stroma cells
    mesh_subdivisions: int = _num(3, 1, 5)  # icosphere level of nucleus meshes (3: 642 vertices)
    types: CellTypesConf = field(default_factory=CellTypesConf)


# ----------------------------------------------------------------------------------------- appearance


@dataclass
class NucleiConf:
    intensity: float = _num(0.42, 0, 1)  # slider: hematoxylin uptake of all nuclei
    # how far chromatin clumps and the clear nucleoplasm between them move hematoxylin from a nucleus's
    # uptake, relative (times each class's chromatin): 1 about +-0.45 of it, 2 the clumps at the
    # darkest and the gaps at the floor below
    chromatin_contrast: float = _num(1.5, 0, 3)
    chromatin_scale_um: float = _num(2.5, 0.1, 10)  # grain size of the chromatin texture
    # least hematoxylin of the nucleoplasm between clumps, relative to the uptake: the palest gaps
    # stay nuclear, so that a threshold still finds a nucleus whole
    nucleoplasm_floor: float = _num(0.45, 0, 1)
    lym_to_pla: float = _num(0.0, 0, 1)  # slider: lymphocytes take on plasma-cell appearance
    # cell-to-cell spread of stain uptake: SD of the log of each nucleus's hematoxylin factor (its
    # cytoplasm's stains spread by 0.8 of it)
    uptake_spread: float = _num(0.15, 0, 1)


@dataclass
class StainConf:
    # OD directions (RGB; three values in [0, 5], not all zero), measured on real healthy colon
    # (GlaS, 0.62 um/px): eosin is the mean OD direction of its least hematoxylin-stained tissue
    # (magenta: it absorbs more blue than red; 16 degrees from Macenko et al.'s typical-slide
    # estimate, which stain=pale keeps). Hematoxylin is chosen so that rendered nuclei, which also
    # hold eosin, have the OD direction of the real nuclei. Blood is the mean OD direction of the
    # reddest real pixels (the top 0.2 % in R - G: red cells, stained by eosin and haemoglobin).
    hematoxylin_od: List[float] = _each([0.51, 0.81, 0.28], 0, 5, length=3)
    eosin_od: List[float] = _each([0.18, 0.93, 0.31], 0, 5, length=3)
    blood_od: List[float] = _each([0.11, 0.95, 0.27], 0, 5, length=3)
    eosin_intensity: float = _num(1.6, 0, 3)  # slider: multiplies every eosin concentration
    stroma_eosin: float = _num(0.09, 0, 5)  # OD per um of the stroma matrix between fibres
    fibre_eosin: float = _num(0.05, 0, 5)  # OD per um added on collagen fibres
    stroma_hematoxylin: float = _num(0.02, 0, 5)  # OD per um of stroma background
    # OD per um of epithelial cytoplasm: lilac, not magenta (GlaS healthy crypt epithelium)
    epithelium_eosin: float = _num(0.10, 0, 5)
    epithelium_hematoxylin: float = _num(0.06, 0, 5)
    # OD per um of hematoxylin added to epithelial cytoplasm at the basement, fading over about
    # basal_um towards the lumen: the ribosome-rich basal cytoplasm of crypt cells, in which the
    # crowded nuclear palisade reads as one dark band
    basal_hematoxylin: float = _num(0.12, 0, 5)
    basal_um: float = _num(5.5, 0.1, 50)
    apical_eosin: float = _num(0.06, 0, 5)  # OD per um of the brush border lining the lumen
    apical_um: float = _num(0.8, 0, 5)  # width of that border
    blood_density: float = _num(0.3, 0, 5)  # OD per um of path through red blood cells
    vessel_wall_eosin: float = _num(0.12, 0, 5)  # OD per um of the capillary wall (barely visible, as in real mucosa)
    plasma_eosin: float = _num(0.07, 0, 5)  # OD per um of the plasma in a capillary lumen without red cells
    goblet_clarity: float = _num(0.85, 0, 1)  # slider: 1 = clear mucin vacuoles, 0 = fully stained mucin
    # OD per um of mucin at goblet_clarity = 0 (times its reticulated strands): pale grey-blue to lilac
    mucin_hematoxylin: float = _num(0.3, 0, 5)
    mucin_eosin: float = _num(0.15, 0, 5)
    # mucin between its strands, relative to the strands (0: only the strands stain, a mesh; 1: even)
    mucin_floor: float = _num(0.5, 0, 1)
    # mucin stains like goblet_clarity = 0 at a theca's edge, fading to the clear centre over about
    # mucin_edge_um: the soft, greyish rim of a real goblet, not a cut-out (0: even throughout)
    mucin_edge: float = _num(0.25, 0, 1)
    mucin_edge_um: float = _num(0.8, 0.1, 20)
    # OD per um of hematoxylin-stained mucus in crypt lumens (times the mucin strands): faint, so that
    # a lumen reads as a pale slit, not a grey blot
    lumen_mucus: float = _num(0.1, 0, 5)
    grain: float = _num(0.1, 0, 1)  # relative amplitude of the fine granular texture of cytoplasm, matrix and mucin
    mottle: float = _num(0.1, 0, 1)  # relative amplitude of uneven eosin uptake of cytoplasm and matrix ...
    mottle_um: float = _num(3.0, 0.5, 100)  # ... over patches about this wide
    # relative spread (log scale) of all stain uptake across the field, as uneven section thickness and
    # staining make it ...
    field_variation: float = _num(0.12, 0, 1)
    field_variation_um: float = _num(100.0, 10, 5000)  # ... over about this length
    grain_um: float = _num(0.8, 0.1, 10)  # its grain size
    # share of the lamina propria's matrix that is loose, with interstitial spaces (fibres cross them) ...
    stroma_clearing: float = _num(0.15, 0, 0.9)
    clearing_um: float = _num(6.0, 0.5, 50)  # ... about this wide ...
    space_density: float = _num(0.35, 0, 1)  # ... where the matrix keeps this share (0: clear glass)
    cell_halo: float = _num(0.2, 0, 1)  # how clear the rim is that the matrix leaves round each stroma cell ...
    halo_um: float = _num(1.0, 0.1, 10)  # ... and its width (shrinkage in fixation)
    overstaining: float = _num(0.0, 0, 1)  # slider: extra eosin filling the space between fibres
    fibre_contrast: float = _num(0.3, 0, 1)  # contrast of the stroma fibre texture
    fibre_width_um: float = _num(0.7, 0.1, 5)  # width of collagen fibres
    fibre_wave_um: float = _num(6.0, 1, 100)  # length over which fibres wave
    fibre_bundling: float = _num(0.0, 0, 2)  # slider: spread (SD of the log) of fibre width: fibrils beside bundles
    fibre_bundle_um: float = _num(10.0, 1, 200)  # length over which that width varies
    colour_shift: float = _num(0.0, -1, 1)  # slider: rotates both stain OD vectors (-1 bluer, +1 redder)


@dataclass
class OpticsConf:
    image_size: int = _num(512, 8, 8192)  # pixels per side (square images)
    # micrometres per pixel (0.25: 40x scan, 0.5: 20x scan); the field, image_size * mpp, is at most
    # MAX_FIELD_UM
    mpp: float = _num(0.25, 0.05, 4)
    # Cycles samples per pixel of the H&E image; 8 denoised is closer to the converged image than 16
    # raw (README, Speed)
    samples: int = _num(8, 1, 4096)
    # OpenImageDenoise on the H&E image (never on labels): smooths the Monte-Carlo grain of blur
    # discs and thin cell edges that a microscope does not show
    denoise: bool = True
    # OpenImageDenoise's quality: fast is about 0.9 core-s cheaper per 512 x 512 image than high and
    # closer to the converged image (README, Speed)
    denoise_quality: str = _choice("fast", "fast", "balanced", "high")
    focus_offset_um: float = _num(0.0, -20, 20)  # focal plane relative to the slab centre (+ = towards the camera)
    aperture: float = _num(0.3, 0, 2)  # blur-disc radius per um of defocus (tan of the cone half-angle)
    # Cycles ray-marching step in cells, as a share of a tenth of the cell's size (smaller: finer and
    # slower; coarse steps bias the image bright, since the mean of exp(-optical depth) exceeds
    # exp(-mean optical depth))
    volume_step_rate: float = _num(0.5, 0.01, 10)
    white_level: float = _num(0.96, 0.5, 1)  # transmittance of empty glass (white point)
    # Depth layers of the tissue texture through the slab. One sheet at the mid-plane: with four,
    # Cycles 4.5 returned pure black for about 0.3 % of pixels, inside nuclei where several sheets
    # cross overlapping cell volumes.
    layers: int = _num(1, 1, 16)
    device: str = _choice("cpu", "cpu", "gpu")  # gpu: checked before the first sample
    # Cycles GPU backend for optics.device=gpu: auto takes the first of OptiX, CUDA, HIP, oneAPI that
    # finds a device and keeps it for the rest of the job; a named backend is used or fails.
    gpu_backend: str = _choice("auto", "auto", "optix", "cuda", "hip", "oneapi")
    threads: int = _num(0, 0, 1024)  # CPU threads of a job; 0 = all cores; 1 = no work in forked processes either


@dataclass
class ScannerConf:
    """What a slide scanner does between the glass and the pixels (arctique/scanner.py): appearance
    only. Defaults: a 20x/0.75 objective, a slightly warm white balance, a 700 e- sensor, and no
    JPEG (the lossless image is the reference; at quality 80 with 4:2:0 chroma colour
    deconvolution separates nuclei a little less well)."""

    enabled: bool = True  # false (scanner=none): the ideal image, sRGB of the render
    numerical_aperture: float = _num(0.75, 0.1, 1.4)  # slider: objective NA; PSF sigma = 0.21 lambda / NA
    wavelength_nm: List[float] = _each([610.0, 540.0, 460.0], 380, 780, length=3)  # centre of R, G, B
    # residual defocus across the field (um, largest magnitude; blur radius |dz| tan(asin NA))
    defocus_um: float = _num(1.2, 0, 10)
    defocus_scale_um: float = _num(40.0, 2, 2000)  # length over which the residual defocus varies
    # lateral chromatic aberration: the largest shift (um) of the red image against the green (blue
    # the opposite way), where a tile lies farthest off the objective's axis; 0 = none. In GlaS
    # (phase correlation of channel gradients) red and blue move at most 0.07 and 0.14 um from green
    lateral_ca_um: float = _num(0.1, 0, 5)
    glass_rgb: List[float] = _each([250.0, 248.0, 250.0], 64, 255, length=3)  # grey levels of empty glass (white balance)
    # photo-electrons at full scale (shot noise): 700 gives the grey-level noise of empty glass in real
    # 20x scans per pixel (GlaS: SD 2-3 in 5 x 5 windows)
    full_well: float = _num(700.0, 100, 1e7)
    read_noise: float = _num(10.0, 0, 10000)  # read noise, electrons RMS
    jpeg_quality: int = _num(0, 5, 100, or_zero=True)  # slider: JPEG quality of the stored image (scanners: 30-90); 0 = lossless


# ------------------------------------------------------------------------------------ noise and output


@dataclass
class SemanticNoiseConf:
    flip_prob: float = _num(1.0, 0, 1)  # probability that an instance's class is flipped, at level 100
    # per true class, weights of the wrong classes: +noise.semantic.confusion.LYM={PLA:3,EOS:1};
    # a class without a row flips uniformly to another class present in the image
    confusion: Dict[str, Dict[str, float]] = _each({}, 0, 1000, keys=NAMES)


@dataclass
class InstanceNoiseConf:
    merge_fraction: float = _num(1.0, 0, 1)  # share of touching instance pairs falsely merged, at level 100
    split_prob: float = _num(0.0, 0, 1)  # probability that an instance is cut in two, at level 100


@dataclass
class ForegroundNoiseConf:
    dropout_prob: float = _num(0.25, 0, 1)  # a cell vanishes from the foreground, at level 100
    scale_prob: float = _num(0.25, 0, 1)  # a cell is dilated or eroded, at level 100
    scale_px: int = _num(6, 1, 50)  # ... by 1 .. scale_px pixels
    shift_prob: float = _num(0.25, 0, 1)  # a cell is displaced, at level 100
    shift_px: int = _num(10, 1, 100)  # ... by up to shift_px pixels per axis
    elastic_prob: float = _num(0.25, 0, 1)  # a cell is elastically warped, at level 100
    elastic_alpha_px: List[float] = _span([5.0, 10.0], 0, 100)  # warp strength range
    elastic_sigma_px: List[float] = _span([0.5, 2.0], 0.1, 20)  # warp smoothness range


@dataclass
class NoiseConf:
    levels: List[float] = _each([], 0, 100)  # distinct noise levels in percent; empty = none
    # every probability below is multiplied by level / 100 (capped at 1)
    semantic: SemanticNoiseConf = field(default_factory=SemanticNoiseConf)
    instance: InstanceNoiseConf = field(default_factory=InstanceNoiseConf)
    foreground: ForegroundNoiseConf = field(default_factory=ForegroundNoiseConf)
    border_px: int = _num(2, 1, 20)  # border width of the 3-class (background, interior, border) targets
    # simulated annotators: per level, this many more label sets, each from its own streams
    annotators: int = _num(0, 0, 100)


@dataclass
class OutputConf:
    root: str = "rendered"  # dataset folder, relative to the working directory; checked before the first sample
    overwrite: bool = False  # redo samples that are already complete, or made with another config
    z_slices: int = _num(10, 1, 100)  # slices of the 3D instance stack through the slab
    preview: bool = True  # write previews/<i>.png (image beside an instance overlay)
    save_blend: bool = False  # also save the Blender scene (scenes/<i>.blend); large
    # sub-pixel rays per pixel side of the partial-volume maps (masks/soft, masks/soft_instances)
    soft_subsamples: int = _num(4, 4, 16)


MAX_SEEDS = 10**6  # seeds per dataset: the job plan and the manifest stay small
MAX_SEED = 2**31 - 1  # largest root seed of any sample


@dataclass
class ShardConf:
    size: int = _num(0, 0, MAX_SEEDS)  # seeds per job; 0 = this job renders all n_samples seeds
    index: int = _num(0, 0, MAX_SEEDS)  # which block of `size` seeds this job renders (shard.index=range(0,K))


@dataclass
class ArctiqueConf:
    seed: int = _num(0, 0, MAX_SEED)  # root seed of the first sample
    n_samples: int = _num(1, 1, MAX_SEEDS)  # samples seed, seed+1, ... of the dataset
    shard: ShardConf = field(default_factory=ShardConf)
    tissue: TissueConf = MISSING
    cells: CellsConf = MISSING
    nuclei: NucleiConf = field(default_factory=NucleiConf)
    stain: StainConf = MISSING
    optics: OpticsConf = MISSING
    scanner: ScannerConf = MISSING
    noise: NoiseConf = MISSING
    output: OutputConf = MISSING


def register_configs() -> None:
    """Register the schema as the root of ``conf/config.yaml``; its typed nodes check every group
    file merged into them, so the groups need no schema entries of their own (none to pick by
    mistake, none in ``--help``)."""
    ConfigStore.instance().store(name="arctique_schema", node=ArctiqueConf)


# ------------------------------------------------------------------------------------------ validation

MAX_FIELD_UM = 2048.0  # largest side of the field of view, optics.image_size * optics.mpp (um)


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is out of range: allowed {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_declared(key: str, value: Any, meta: Dict[str, Any]) -> None:
    """Check one value against the declaration in its field's metadata."""
    if "choices" in meta:
        _check(value in meta["choices"], key, value, " or ".join(map(repr, meta["choices"])))
        return
    if "range" not in meta:
        return
    lo, hi = meta["range"]
    if isinstance(value, dict):
        for name, v in value.items():
            if meta["keys"] is not None:
                _check(name in meta["keys"], f"{key}.{name}", v, f"keys among {list(meta['keys'])}")
            _check_declared(f"{key}.{name}", v, meta)
    elif isinstance(value, list):
        length = meta.get("length")
        if meta.get("ordered"):
            _check(len(value) == length, key, list(value), "a list [min, max]")
            _check(value[0] <= value[1], key, list(value), "min <= max")
            _check(all(lo <= v <= hi for v in value), key, list(value), f"values in [{lo}, {hi}]")
            return
        if length is not None:
            _check(len(value) == length, key, list(value), f"a list of {length} values")
        for v in value:
            _check(_is_number(v) and lo <= v <= hi, f"{key}[]", v, f"[{lo}, {hi}]")
    elif meta.get("or_zero"):
        _check(value == 0 or lo <= value <= hi, key, value, f"0 (none) or [{lo}, {hi}]")
    else:
        _check(_is_number(value) and lo <= value <= hi, key, value, f"[{lo}, {hi}]")


def _check_fields(node: Any, prefix: str = "") -> None:
    """Check every field of ``node`` and its sub-nodes against its declaration."""
    for f in fields(node):
        value = getattr(node, f.name)
        if is_dataclass(value):
            _check_fields(value, f"{prefix}{f.name}.")
        else:
            _check_declared(f"{prefix}{f.name}", value, f.metadata)


def validate(cfg: ArctiqueConf) -> None:
    """Check every value against its declared range, then the relations between values, before any
    work starts.

    Raises:
        ConfigError: naming the first offending key, its value and the allowed range.
    """
    _check_fields(cfg)
    if cfg.shard.size:
        shards = -(-cfg.n_samples // cfg.shard.size)
        _check(cfg.shard.index < shards, "shard.index", cfg.shard.index,
               f"[0, {shards - 1}] (n_samples / shard.size blocks)")
    else:  # without a size every job would render every seed: on SLURM each array task the whole range
        _check(cfg.shard.index == 0, "shard.index", cfg.shard.index, "0 while shard.size = 0 (set shard.size)")
    _check(cfg.seed + cfg.n_samples - 1 <= MAX_SEED, "n_samples", cfg.n_samples,
           f"[1, {MAX_SEED - cfg.seed + 1}] (the last seed, seed + n_samples - 1, is at most {MAX_SEED})")
    c = cfg.tissue.crypt
    _check(c.warp_um <= c.spacing_um / 4, "tissue.crypt.warp_um", c.warp_um,
           f"<= tissue.crypt.spacing_um / 4 = {c.spacing_um / 4:g}")
    _check(c.lumen_radius_um < 0.6 * c.radius_um, "tissue.crypt.lumen_radius_um", c.lumen_radius_um,
           f"< 0.6 * tissue.crypt.radius_um = {0.6 * c.radius_um:g}")
    _check(2 * c.radius_um * (1 - c.radius_jitter) + c.gap_um < c.spacing_um * (1 - 2 * c.spacing_jitter),
           "tissue.crypt.spacing_um", c.spacing_um,
           "large enough that the smallest crypts drawn keep gap_um between them unnarrowed: "
           "> (2 * radius_um * (1 - radius_jitter) + gap_um) / (1 - 2 * spacing_jitter)")
    depth = cfg.tissue.section.depth_um
    _check(depth[1] <= c.depth_um, "tissue.section.depth_um", list(depth),
           f"values <= tissue.crypt.depth_um = {c.depth_um:g}")
    ratios = cfg.cells.ratios
    _check(sum(ratios.values()) > 0, "cells.ratios", dict(ratios), "non-negative, not all zero")
    for true, row in cfg.noise.semantic.confusion.items():
        for name, w in row.items():
            _check(name != true, f"noise.semantic.confusion.{true}.{name}", w, f"another class than {true}")
    for name in ("hematoxylin_od", "eosin_od", "blood_od"):
        od = getattr(cfg.stain, name)
        _check(sum(od) > 0, f"stain.{name}", list(od), "three non-negative optical densities, not all zero")
    levels = cfg.noise.levels
    _check(len(set(levels)) == len(levels), "noise.levels", list(levels), "distinct levels")
    o = cfg.optics
    _check(o.image_size * o.mpp <= MAX_FIELD_UM, "optics.mpp", o.mpp,
           f"optics.image_size * optics.mpp <= {MAX_FIELD_UM:g} um (the field of view)")
    _check(bool(cfg.output.root), "output.root", cfg.output.root, "a non-empty path")


# --------------------------------------------------------------------------------------------- keys


def _schema_keys(node: type = ArctiqueConf, prefix: str = "") -> Dict[str, bool]:
    """Every dotted key of the schema, each with whether it is a mapping that takes any sub-key."""
    hints = typing.get_type_hints(node)
    keys: Dict[str, bool] = {}
    for f in fields(node):
        kind = hints[f.name]
        keys[prefix + f.name] = typing.get_origin(kind) is dict
        if is_dataclass(kind):
            keys.update(_schema_keys(kind, f"{prefix}{f.name}."))
    return keys


def check_keys(keys: Iterable[str]) -> None:
    """Reject a key the schema does not have (also when added with ``+``), naming the nearest one.

    Raises:
        ConfigError: for the first unknown key.
    """
    known = _schema_keys()
    mappings = [k for k, open_mapping in known.items() if open_mapping]
    for key in keys:
        if key in known or any(key.startswith(m + ".") for m in mappings):
            continue
        nearest = difflib.get_close_matches(key, list(known), n=1, cutoff=0)
        hint = f"; the nearest key is {nearest[0]}" if nearest else ""
        raise ConfigError(f"{key} is not a configuration key{hint}")


def config_groups() -> List[str]:
    """The config groups of the ``arctique.conf`` package (``optics``, ``experiment``, ...): choosing
    one (``optics=20x``, ``+experiment=laptop/clean``) names a group, not a key."""
    root = importlib.resources.files("arctique.conf")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


# The clean and noisy sets of a benchmark design first, then the series (which re-render clean test seeds).
BENCHMARK_FIRST_PARTS = ("clean", "noisy")


def benchmark_designs() -> List[str]:
    """The benchmark designs: the folders of the ``experiment`` group (``laptop``, ``v3``)."""
    return sorted(p.name for p in importlib.resources.files("arctique.conf").joinpath("experiment").iterdir()
                  if p.is_dir())


def benchmark_parts(design: str) -> List[str]:
    """The presets of ``design``, in the order arctique-benchmark renders them: clean, noisy, then
    the series in name order."""
    names = sorted(p.name[:-len(".yaml")] for p in
                   importlib.resources.files("arctique.conf").joinpath("experiment", design).iterdir()
                   if p.name.endswith(".yaml"))
    return [n for n in BENCHMARK_FIRST_PARTS if n in names] + [n for n in names if n not in BENCHMARK_FIRST_PARTS]


def check_override_keys(overrides: Sequence[str]) -> None:
    """:func:`check_keys` for the keys of command-line overrides (Hydra's own keys and config group
    choices such as ``hydra/launcher=local`` pass; a malformed override is left to Hydra)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # Hydra reports grammar errors in its own words
        return
    groups = config_groups()
    check_keys(o.key_or_group for o in parsed
               if "/" not in o.key_or_group and o.key_or_group.split(".")[0] != "hydra"
               and o.key_or_group not in groups)


# ------------------------------------------------------------------------------------ derived values


def to_dict(node: Any, scene_only: bool = False) -> Any:
    """Plain-Python copy of a config dataclass (for JSON); with ``scene_only`` without the
    per-class appearance fields."""
    if is_dataclass(node):
        return {f.name: to_dict(getattr(node, f.name), scene_only) for f in fields(node)
                if not (scene_only and f.metadata.get("appearance"))}
    if isinstance(node, dict):
        return {k: to_dict(v, scene_only) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_dict(v, scene_only) for v in node]
    return node


def scene_part(cfg: ArctiqueConf) -> Dict[str, Any]:
    """The config values that shape the scene (with the field of view, optics.image_size * mpp)."""
    return {"tissue": to_dict(cfg.tissue, True), "cells": to_dict(cfg.cells, True)}


# Values that never change a sample's files: which seeds, where, and on which device.
NOT_IN_FINGERPRINT = {"optics": ("device", "gpu_backend", "threads"), "output": ("root", "overwrite")}
FINGERPRINT_NODES = ("tissue", "cells", "nuclei", "stain", "optics", "scanner", "noise", "output")


def fingerprint(values: Dict[str, Any]) -> str:
    """Hash of everything that shapes a sample's files apart from its seed (scene, appearance,
    label noise, written layers), from a plain config dict (``to_dict(cfg)`` or saved parameters).
    A dataset records it per sample, so a run with another config never mixes into it."""
    shaping = {}
    for node in FINGERPRINT_NODES:
        part = dict(values.get(node) or {})
        for key in NOT_IN_FINGERPRINT.get(node, ()):
            part.pop(key, None)
        shaping[node] = part
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
