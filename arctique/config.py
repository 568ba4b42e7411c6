"""Typed configuration schema, registered in Hydra's ConfigStore, and its validation.

Every length is in micrometres (suffix ``_um``). A two-element list ``[lo, hi]`` is a range that is
sampled uniformly per sample (give ``[x, x]`` to fix it). Which node a key lives in says what it
changes:

* ``seed``, ``tissue``, ``cells``: the scene model (geometry, cell population, labels);
* ``n_samples``, ``shard``: which seeds this job renders;
* ``nuclei``, ``stain``, ``optics``: appearance only (a sweep over them re-renders identical geometry);
* ``noise``: label-noise variants written beside the clean labels;
* ``output``: where and what is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .classes import NAMES, STROMA_NAMES


class ConfigError(ValueError):
    """A configuration value outside its allowed range; the message names key, value and range."""


def _ranged(default: float, lo: float, hi: float) -> Any:
    """A value with its allowed range in the field's metadata, checked by ``validate``."""
    return field(default=default, metadata={"range": (lo, hi)})


# --------------------------------------------------------------------------------------------- tissue


@dataclass
class CryptConf:
    spacing_um: float = 108.0  # centre distance of neighbouring crypts (hexagonal lattice)
    spacing_jitter: float = 0.1  # random displacement of crypt centres, fraction of spacing [0, 0.4]
    radius_um: float = 37.0  # outer (basal) radius of a crypt
    radius_jitter: float = 0.1  # per-crypt relative radius variation [0, 0.5]
    lumen_radius_um: float = 7.0  # mean radius of the lumen
    lumen_lobes: List[int] = field(default_factory=lambda: [2, 6])  # folds of the lumen (2: a slit)
    lumen_fold: List[float] = field(default_factory=lambda: [0.35, 0.6])  # relative depth of the folds
    depth_um: float = 420.0  # length of the tube below the luminal surface (its end is rounded)
    warp_um: float = 5.0  # amplitude of the meander of the crypt axis
    warp_wavelength_um: float = 160.0  # wavelength of that meander
    wall_roughness: float = 0.08  # relative amplitude of the angular modulation of the wall [0, 0.3]


@dataclass
class SurfaceConf:
    thickness_um: float = 18.0  # height of the surface epithelium lining the gut lumen
    undulation_um: float = 4.0  # amplitude of the surface's gentle waves
    wavelength_um: float = 90.0  # their wavelength


@dataclass
class SectionConf:
    thickness_um: List[float] = field(default_factory=lambda: [3.0, 5.0])  # slab thickness range
    depth_um: List[float] = field(default_factory=lambda: [40.0, 340.0])  # slab centre below the surface
    tilt_deg: List[float] = field(default_factory=lambda: [0.0, 90.0])  # crypt axis vs. slab normal


@dataclass
class EpitheliumConf:
    spacing_um: float = 4.3  # centre distance of neighbouring epithelial nuclei around the wall
    row_spacing_um: float = 5.5  # ... and along the crypt axis
    basal_gap_um: float = 0.8  # gap between the basement boundary and the nucleus
    stratification_um: float = 3.0  # nuclei sit up to this far from the base (pseudo-stratified)
    goblet_fraction: float = 0.34  # fraction of epithelial cells that are goblet cells [0, 1]
    goblet_length_um: List[float] = field(default_factory=lambda: [18.0, 26.0])  # radial extent of mucin
    goblet_width_um: List[float] = field(default_factory=lambda: [10.0, 13.0])  # tangential extent of mucin
    goblet_fill: float = 1.0  # a vacuole spans at most this share of the wall between goblets [0.3, 1.5]


@dataclass
class RipsConf:
    strength: float = 0.02  # share of the field torn open (white tears) [0, 0.5]
    scale_um: float = 45.0  # spacing of the crack network
    patch_um: float = 60.0  # size of the damaged patches that carry cracks
    cleft_um: float = 2.0  # greatest width of the retraction clefts along crypt walls in damaged patches [0, 10]


@dataclass
class BloodConf:
    strength: float = 0.3  # red blood cells per 1000 um^2 of stroma in the section [0, 20]
    diameter_um: float = 7.5  # red blood cell diameter


@dataclass
class TissueConf:
    crypt: CryptConf = field(default_factory=CryptConf)
    surface: SurfaceConf = field(default_factory=SurfaceConf)
    section: SectionConf = field(default_factory=SectionConf)
    epithelium: EpitheliumConf = field(default_factory=EpitheliumConf)
    rips: RipsConf = field(default_factory=RipsConf)
    blood: BloodConf = field(default_factory=BloodConf)
    margin_um: float = 8.0  # scene extends this far beyond the field of view (cells cut by the border)


# ---------------------------------------------------------------------------------------------- cells


def _look(default: float, lo: float, hi: float) -> Any:
    """A per-class appearance value with its allowed range: it changes how a class renders, never the
    scene, so it is left out of ``scene_part`` and re-rendering keeps geometry and labels."""
    return field(default=default, metadata={"appearance": True, "range": (lo, hi)})


@dataclass
class CellTypeConf:
    """Everything that makes one class look like itself: shape, size, cytoplasm, stain and texture."""

    length_um: List[float] = field(default_factory=lambda: [6.0, 7.0])  # longest nucleus extent
    elongation: List[float] = field(default_factory=lambda: [1.0, 1.2])  # longest / shortest extent
    lobes: List[int] = field(default_factory=lambda: [1, 1])  # number of nuclear lobes (range)
    bend_deg: float = 0.0  # maximal bend of the nucleus along its long axis
    shape_noise: float = 0.06  # relative amplitude of the per-instance surface variation [0, 0.3]
    # spatial frequency range of that variation, radians per unit of direction: low values bend the
    # outline, high values dent it (real nuclei are notched) [0.5, 8]
    shape_frequency: List[float] = field(default_factory=lambda: [1.5, 3.5])
    cytoplasm_scale: float = 0.0  # cell body size / nucleus size; 0 = no cytoplasm drawn
    eccentricity: float = 0.0  # offset of the nucleus in its cell, fraction of the free space [0, 1]
    # Appearance (OD per um of path, at nuclei.intensity = 1 and stain.eosin_intensity = 1):
    hematoxylin: float = _look(1.0, 0, 5)  # nuclear hematoxylin
    chromatin: float = _look(1.0, 0, 2)  # multiplies nuclei.chromatin_contrast (coarse chromatin)
    rim: float = _look(0.0, 0, 3)  # extra hematoxylin on the nuclear membrane, relative
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
        length_um=[8.0, 13.0], elongation=[1.5, 2.3], shape_noise=0.22, shape_frequency=[3.5, 7.0],
        hematoxylin=1.0,
        chromatin=1.0, rim=0.6, nucleoli=0.8)
    PLA: CellTypeConf = _type(
        length_um=[5.5, 7.0], elongation=[1.05, 1.3], shape_noise=0.12, shape_frequency=[3.0, 6.0],
        cytoplasm_scale=1.5, eccentricity=0.8, hematoxylin=0.95, chromatin=1.5, rim=1.2,
        cytoplasm_eosin=0.2, cytoplasm_hematoxylin=0.18, hof=0.35)
    LYM: CellTypeConf = _type(
        length_um=[5.0, 6.5], elongation=[1.0, 1.15], shape_noise=0.12, shape_frequency=[3.0, 6.0],
        cytoplasm_scale=1.12,
        hematoxylin=1.0, chromatin=0.6, rim=0.3, cytoplasm_eosin=0.24, cytoplasm_hematoxylin=0.06)
    EOS: CellTypeConf = _type(
        length_um=[7.0, 9.0], elongation=[1.5, 1.9], lobes=[2, 2], shape_noise=0.08,
        cytoplasm_scale=1.55, hematoxylin=0.95, chromatin=0.7, rim=0.4, cytoplasm_eosin=0.6,
        cytoplasm_hematoxylin=0.0, granules=0.7)
    FIB: CellTypeConf = _type(
        length_um=[11.0, 18.0], elongation=[4.0, 6.5], bend_deg=50.0, shape_noise=0.1,
        hematoxylin=1.1, chromatin=0.5, rim=0.3)
    NEU: CellTypeConf = _type(
        length_um=[8.0, 10.0], elongation=[1.3, 1.7], lobes=[3, 4], shape_noise=0.08,
        cytoplasm_scale=1.4, hematoxylin=0.95, chromatin=0.6, rim=0.3, cytoplasm_eosin=0.22,
        cytoplasm_hematoxylin=0.03)


@dataclass
class CellsConf:
    stroma_density: float = 1.15  # stroma cells per 1000 um^3 of lamina propria (all types)
    ratios: Dict[str, float] = field(
        default_factory=lambda: {"PLA": 0.2, "LYM": 0.4, "EOS": 0.03, "FIB": 0.35, "NEU": 0.02}
    )  # relative abundance of the stroma types; normalised
    nucleus_scale: Dict[str, float] = field(
        default_factory=lambda: {name: 1.0 for name in NAMES}
    )  # slider: multiplies every size of that type's nuclei [0.5, 1.5]
    min_gap_um: float = 0.3  # minimal distance between the collision shells of two stroma cells
    mesh_subdivisions: int = 3  # icosphere level of nucleus meshes (3: 642 vertices) [1, 5]
    types: CellTypesConf = field(default_factory=CellTypesConf)


# ----------------------------------------------------------------------------------------- appearance


@dataclass
class NucleiConf:
    intensity: float = 0.6  # slider: hematoxylin uptake of all nuclei [0, 1]
    chromatin_contrast: float = 0.55  # strength of the chromatin texture [0, 1]
    chromatin_scale_um: float = 0.9  # grain size of the chromatin texture
    lym_to_pla: float = 0.0  # slider: lymphocytes take on plasma-cell appearance [0, 1]


@dataclass
class StainConf:
    # OD directions (RGB). Eosin: Macenko et al.'s typical-slide estimate. Hematoxylin: that
    # estimate turned 3 degrees towards Ruifrok and Johnston's pure dye (0.65, 0.70, 0.29), because
    # every rendered nucleus also holds some eosin: a Macenko estimate on the image then lands near
    # the published slide vector and nuclei read purple-blue. Blood from oxyhaemoglobin.
    hematoxylin_od: List[float] = field(default_factory=lambda: [0.5935, 0.7155, 0.3685])
    eosin_od: List[float] = field(default_factory=lambda: [0.2159, 0.8012, 0.5581])
    blood_od: List[float] = field(default_factory=lambda: [0.10, 0.80, 0.59])
    eosin_intensity: float = 1.0  # slider: multiplies every eosin concentration [0, 3]
    stroma_eosin: float = 0.2  # OD per um of the stroma matrix between fibres
    fibre_eosin: float = 0.05  # OD per um added on collagen fibres
    stroma_hematoxylin: float = 0.09  # OD per um of stroma background
    epithelium_eosin: float = 0.17  # OD per um of epithelial cytoplasm
    epithelium_hematoxylin: float = 0.09
    apical_eosin: float = 0.25  # OD per um of the brush border lining the lumen
    apical_um: float = 0.8  # width of that border
    blood_density: float = 0.6  # OD per um of red blood cells
    goblet_clarity: float = 0.95  # slider: 1 = clear mucin vacuoles, 0 = stained like cytoplasm [0, 1]
    overstaining: float = 0.0  # slider: extra eosin filling the space between fibres [0, 1]
    fibre_contrast: float = 0.3  # contrast of the stroma fibre texture [0, 1]
    fibre_width_um: float = 0.4  # width of collagen fibres
    fibre_wave_um: float = 6.0  # length over which fibres wave
    colour_shift: float = 0.0  # slider: rotates both stain OD vectors (-1 bluer, +1 redder) [-1, 1]


@dataclass
class OpticsConf:
    image_size: int = 512  # pixels per side (square images)
    mpp: float = 0.25  # micrometres per pixel (0.25: 40x scan, 0.5: 20x scan)
    samples: int = 16  # Cycles samples per pixel of the H&E image [1, 4096]
    # OpenImageDenoise on the H&E image (never on labels): smooths the Monte-Carlo grain of blur
    # discs and thin cell edges that a microscope does not show
    denoise: bool = True
    focus_offset_um: float = 0.0  # focal plane relative to the slab centre (+ = towards the camera)
    aperture: float = 0.3  # blur-disc radius per um of defocus (tan of the cone half-angle) [0, 2]
    volume_step_rate: float = 3.0  # Cycles ray-marching step rate in cells (smaller: finer, slower)
    white_level: float = 0.96  # transmittance of empty glass (white point)
    # Depth layers of the tissue texture through the slab [1, 16]. One sheet at the mid-plane: with
    # four, Cycles 4.5 returned pure black for about 0.3 % of pixels, inside nuclei where several
    # sheets cross overlapping cell volumes.
    layers: int = 1
    device: str = "cpu"  # cpu | gpu (an error when the GPU backend finds no device)
    # Cycles GPU backend for optics.device=gpu: auto takes the first of OptiX, CUDA, HIP, oneAPI that
    # finds a device and keeps it for the rest of the job; a named backend is used or fails.
    gpu_backend: str = field(default="auto", metadata={"choices": ("auto", "optix", "cuda", "hip", "oneapi")})
    threads: int = 0  # CPU render threads; 0 = all cores


# ------------------------------------------------------------------------------------ noise and output


@dataclass
class SemanticNoiseConf:
    flip_prob: float = 1.0  # probability that an instance's class is flipped, at level 100 [0, 1]
    confusion: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # per true class, weights of the wrong classes: +noise.semantic.confusion.LYM={PLA:3,EOS:1};
    # a class without a row flips uniformly to another class present in the image


@dataclass
class InstanceNoiseConf:
    merge_fraction: float = 1.0  # share of touching instance pairs falsely merged, at level 100 [0, 1]
    split_prob: float = 0.0  # probability that an instance is cut in two, at level 100 [0, 1]


@dataclass
class ForegroundNoiseConf:
    dropout_prob: float = 0.25  # a cell vanishes from the foreground, at level 100 [0, 1]
    scale_prob: float = 0.25  # a cell is dilated or eroded, at level 100 [0, 1]
    scale_px: int = 6  # ... by 1 .. scale_px pixels [1, 50]
    shift_prob: float = 0.25  # a cell is displaced, at level 100 [0, 1]
    shift_px: int = 10  # ... by up to shift_px pixels per axis [1, 100]
    elastic_prob: float = 0.25  # a cell is elastically warped, at level 100 [0, 1]
    elastic_alpha_px: List[float] = field(default_factory=lambda: [5.0, 10.0])  # warp strength range
    elastic_sigma_px: List[float] = field(default_factory=lambda: [0.5, 2.0])  # warp smoothness range


@dataclass
class NoiseConf:
    levels: List[float] = field(default_factory=list)  # noise levels in percent; empty = none [0, 100]
    # every probability below is multiplied by level / 100 (capped at 1)
    semantic: SemanticNoiseConf = field(default_factory=SemanticNoiseConf)
    instance: InstanceNoiseConf = field(default_factory=InstanceNoiseConf)
    foreground: ForegroundNoiseConf = field(default_factory=ForegroundNoiseConf)
    border_px: int = 2  # border width of the 3-class (background, interior, border) targets [1, 20]
    # simulated annotators: per level, this many more label sets, each from its own streams
    annotators: int = _ranged(0, 0, 100)


@dataclass
class OutputConf:
    root: str = "rendered"  # dataset folder, relative to the working directory
    overwrite: bool = False  # redo samples that are already complete
    z_slices: int = 10  # slices of the 3D instance stack through the slab [1, 100]
    preview: bool = True  # write previews/<i>.png (image beside an instance overlay)
    save_blend: bool = False  # also save the Blender scene (scenes/<i>.blend); large
    # sub-pixel rays per pixel side of the partial-volume maps (masks/soft, masks/soft_instances)
    soft_subsamples: int = _ranged(4, 4, 16)


@dataclass
class ShardConf:
    size: int = 0  # seeds per job; 0 = this job renders all n_samples seeds
    index: int = 0  # which block of `size` seeds this job renders (sweep it: shard.index=range(0,K))


@dataclass
class ArctiqueConf:
    defaults: List[Any] = field(
        default_factory=lambda: [
            {"tissue": "colon"},
            {"cells": "lamina_propria"},
            {"stain": "he"},
            {"optics": "40x"},
            {"noise": "none"},
            {"output": "default"},
            "_self_",
        ]
    )
    seed: int = 0  # root seed of the first sample
    n_samples: int = 1  # samples seed, seed+1, ... of the dataset
    shard: ShardConf = field(default_factory=ShardConf)
    tissue: TissueConf = MISSING
    cells: CellsConf = MISSING
    nuclei: NucleiConf = field(default_factory=NucleiConf)
    stain: StainConf = MISSING
    optics: OpticsConf = MISSING
    noise: NoiseConf = MISSING
    output: OutputConf = MISSING


def register_configs() -> None:
    """Register the schema: ``conf/config.yaml`` and every group file extend these nodes."""
    cs = ConfigStore.instance()
    cs.store(name="arctique_schema", node=ArctiqueConf)
    for group, node in [
        ("tissue", TissueConf),
        ("cells", CellsConf),
        ("stain", StainConf),
        ("optics", OpticsConf),
        ("noise", NoiseConf),
        ("output", OutputConf),
    ]:
        cs.store(group=group, name=f"base_{group}", node=node)


# ------------------------------------------------------------------------------------------ validation

STROMA_TYPES = STROMA_NAMES
ALL_TYPES = NAMES


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{key}={value!r} is out of range: allowed {allowed}")


def _positive(key: str, value: float) -> None:
    _check(isinstance(value, (int, float)) and value > 0 and math.isfinite(value), key, value, "> 0")


def _between(key: str, value: float, lo: float, hi: float) -> None:
    _check(isinstance(value, (int, float)) and lo <= value <= hi, key, value, f"[{lo}, {hi}]")


def _range(key: str, value: List[float], lo: float, hi: float) -> None:
    _check(len(value) == 2, key, list(value), "a list [min, max]")
    _check(value[0] <= value[1], key, list(value), "min <= max")
    for v in value:
        _check(lo <= v <= hi, key, list(value), f"values in [{lo}, {hi}]")


def _od_vector(key: str, value: List[float]) -> None:
    _check(len(value) == 3 and all(v >= 0 for v in value) and sum(value) > 0,
           key, list(value), "three non-negative optical densities, not all zero")


def _declared_ranges(prefix: str, node: Any) -> None:
    """Check the fields of ``node`` that declare their range or their allowed values in their metadata."""
    for f in fields(node):
        value = getattr(node, f.name)
        if "range" in f.metadata:
            _between(f"{prefix}.{f.name}", value, *f.metadata["range"])
        if "choices" in f.metadata:
            choices = f.metadata["choices"]
            _check(value in choices, f"{prefix}.{f.name}", value, " | ".join(choices))


def validate(cfg: ArctiqueConf) -> None:
    """Check every value against its allowed range before any work starts.

    Raises:
        ConfigError: naming the first offending key, its value and the allowed range.
    """
    _check(cfg.seed >= 0, "seed", cfg.seed, ">= 0")
    _check(cfg.n_samples >= 1, "n_samples", cfg.n_samples, ">= 1")
    _check(cfg.shard.size >= 0, "shard.size", cfg.shard.size, ">= 0 (0: no sharding)")
    if cfg.shard.size:
        shards = -(-cfg.n_samples // cfg.shard.size)
        _between("shard.index", cfg.shard.index, 0, shards - 1)

    t = cfg.tissue
    c = t.crypt
    for name in ("spacing_um", "radius_um", "lumen_radius_um", "depth_um", "warp_wavelength_um"):
        _positive(f"tissue.crypt.{name}", getattr(c, name))
    _between("tissue.crypt.spacing_jitter", c.spacing_jitter, 0, 0.4)
    _between("tissue.crypt.radius_jitter", c.radius_jitter, 0, 0.5)
    _between("tissue.crypt.wall_roughness", c.wall_roughness, 0, 0.3)
    _range("tissue.crypt.lumen_lobes", c.lumen_lobes, 2, 12)
    _range("tissue.crypt.lumen_fold", c.lumen_fold, 0, 0.9)
    _between("tissue.surface.thickness_um", t.surface.thickness_um, 0, 60)
    _between("tissue.surface.undulation_um", t.surface.undulation_um, 0, 30)
    _positive("tissue.surface.wavelength_um", t.surface.wavelength_um)
    _between("tissue.crypt.warp_um", c.warp_um, 0, c.spacing_um / 4)
    _check(c.lumen_radius_um < 0.6 * c.radius_um, "tissue.crypt.lumen_radius_um", c.lumen_radius_um,
           f"< 0.6 * tissue.crypt.radius_um = {0.6 * c.radius_um:g}")
    _check(2 * c.radius_um * (1 + c.radius_jitter) < c.spacing_um * (1 - 2 * c.spacing_jitter),
           "tissue.crypt.spacing_um", c.spacing_um,
           "large enough that neighbouring crypts never touch: "
           "> 2 * radius_um * (1 + radius_jitter) / (1 - 2 * spacing_jitter)")
    s = t.section
    _range("tissue.section.thickness_um", s.thickness_um, 0.5, 30)
    _range("tissue.section.depth_um", s.depth_um, 0, c.depth_um)
    _range("tissue.section.tilt_deg", s.tilt_deg, 0, 90)
    e = t.epithelium
    _positive("tissue.epithelium.spacing_um", e.spacing_um)
    _positive("tissue.epithelium.row_spacing_um", e.row_spacing_um)
    _between("tissue.epithelium.basal_gap_um", e.basal_gap_um, 0, 10)
    _between("tissue.epithelium.goblet_fraction", e.goblet_fraction, 0, 1)
    _between("tissue.epithelium.stratification_um", e.stratification_um, 0, 10)
    _between("tissue.epithelium.goblet_fill", e.goblet_fill, 0.3, 1.5)
    _range("tissue.epithelium.goblet_length_um", e.goblet_length_um, 1, 40)
    _range("tissue.epithelium.goblet_width_um", e.goblet_width_um, 1, 40)
    _between("tissue.rips.strength", t.rips.strength, 0, 0.5)
    _positive("tissue.rips.scale_um", t.rips.scale_um)
    _positive("tissue.rips.patch_um", t.rips.patch_um)
    _between("tissue.rips.cleft_um", t.rips.cleft_um, 0, 10)
    _between("tissue.blood.strength", t.blood.strength, 0, 20)
    _positive("tissue.blood.diameter_um", t.blood.diameter_um)
    _between("tissue.margin_um", t.margin_um, 0, 100)

    cl = cfg.cells
    _between("cells.stroma_density", cl.stroma_density, 0, 10)
    for name, v in cl.ratios.items():
        _check(name in STROMA_TYPES, f"cells.ratios.{name}", v, f"keys among {list(STROMA_TYPES)}")
        _check(v >= 0, f"cells.ratios.{name}", v, ">= 0")
    _check(sum(cl.ratios.values()) > 0, "cells.ratios", dict(cl.ratios), "non-negative, not all zero")
    for name, v in cl.nucleus_scale.items():
        _check(name in ALL_TYPES, f"cells.nucleus_scale.{name}", v, f"keys among {list(ALL_TYPES)}")
        _between(f"cells.nucleus_scale.{name}", v, 0.5, 1.5)
    _between("cells.min_gap_um", cl.min_gap_um, 0, 5)
    _between("cells.mesh_subdivisions", cl.mesh_subdivisions, 1, 5)
    for name in ALL_TYPES:
        ct: CellTypeConf = getattr(cl.types, name)
        key = f"cells.types.{name}"
        _range(f"{key}.length_um", ct.length_um, 1, 60)
        _range(f"{key}.elongation", ct.elongation, 1, 10)
        _range(f"{key}.lobes", ct.lobes, 1, 6)
        _between(f"{key}.bend_deg", ct.bend_deg, 0, 120)
        _between(f"{key}.shape_noise", ct.shape_noise, 0, 0.3)
        _range(f"{key}.shape_frequency", ct.shape_frequency, 0.5, 8)
        _check(ct.cytoplasm_scale == 0 or 1.05 <= ct.cytoplasm_scale <= 4,
               f"{key}.cytoplasm_scale", ct.cytoplasm_scale, "0 (none) or [1.05, 4]")
        _between(f"{key}.eccentricity", ct.eccentricity, 0, 1)
        _declared_ranges(key, ct)

    n = cfg.nuclei
    _between("nuclei.intensity", n.intensity, 0, 1)
    _between("nuclei.chromatin_contrast", n.chromatin_contrast, 0, 1)
    _positive("nuclei.chromatin_scale_um", n.chromatin_scale_um)
    _between("nuclei.lym_to_pla", n.lym_to_pla, 0, 1)

    st = cfg.stain
    for name in ("hematoxylin_od", "eosin_od", "blood_od"):
        _od_vector(f"stain.{name}", getattr(st, name))
    for name in ("stroma_eosin", "fibre_eosin", "stroma_hematoxylin", "epithelium_eosin",
                 "epithelium_hematoxylin", "apical_eosin", "blood_density"):
        _between(f"stain.{name}", getattr(st, name), 0, 5)
    _between("stain.apical_um", st.apical_um, 0, 5)
    _between("stain.fibre_width_um", st.fibre_width_um, 0.1, 5)
    _between("stain.fibre_wave_um", st.fibre_wave_um, 1, 100)
    _between("stain.eosin_intensity", st.eosin_intensity, 0, 3)
    _between("stain.goblet_clarity", st.goblet_clarity, 0, 1)
    _between("stain.overstaining", st.overstaining, 0, 1)
    _between("stain.fibre_contrast", st.fibre_contrast, 0, 1)
    _between("stain.colour_shift", st.colour_shift, -1, 1)

    o = cfg.optics
    _between("optics.image_size", o.image_size, 8, 8192)
    _positive("optics.mpp", o.mpp)
    _between("optics.samples", o.samples, 1, 4096)
    _between("optics.focus_offset_um", o.focus_offset_um, -20, 20)
    _between("optics.aperture", o.aperture, 0, 2)
    _between("optics.volume_step_rate", o.volume_step_rate, 0.01, 10)
    _between("optics.white_level", o.white_level, 0.5, 1)
    _between("optics.layers", o.layers, 1, 16)
    _check(o.device in ("cpu", "gpu"), "optics.device", o.device, "'cpu' or 'gpu'")
    _between("optics.threads", o.threads, 0, 1024)
    _declared_ranges("optics", o)

    nz = cfg.noise
    for lv in nz.levels:
        _between("noise.levels[]", lv, 0, 100)
    _check(len(set(nz.levels)) == len(nz.levels), "noise.levels", list(nz.levels), "distinct levels")
    _between("noise.semantic.flip_prob", nz.semantic.flip_prob, 0, 1)
    for true, row in nz.semantic.confusion.items():
        _check(true in ALL_TYPES, f"noise.semantic.confusion.{true}", dict(row), f"keys among {list(ALL_TYPES)}")
        for name, w in row.items():
            key = f"noise.semantic.confusion.{true}.{name}"
            _check(name in ALL_TYPES and name != true, key, w, f"another class among {list(ALL_TYPES)}")
            _check(w >= 0, key, w, ">= 0")
    _between("noise.instance.merge_fraction", nz.instance.merge_fraction, 0, 1)
    _between("noise.instance.split_prob", nz.instance.split_prob, 0, 1)
    fg = nz.foreground
    for op in ("dropout", "scale", "shift", "elastic"):
        _between(f"noise.foreground.{op}_prob", getattr(fg, f"{op}_prob"), 0, 1)
    _between("noise.foreground.scale_px", fg.scale_px, 1, 50)
    _between("noise.foreground.shift_px", fg.shift_px, 1, 100)
    _range("noise.foreground.elastic_alpha_px", fg.elastic_alpha_px, 0, 100)
    _range("noise.foreground.elastic_sigma_px", fg.elastic_sigma_px, 0.1, 20)
    _between("noise.border_px", nz.border_px, 1, 20)
    _declared_ranges("noise", nz)

    out = cfg.output
    _check(bool(out.root), "output.root", out.root, "a non-empty path")
    _between("output.z_slices", out.z_slices, 1, 100)
    _declared_ranges("output", out)


def to_dict(node: Any, scene_only: bool = False) -> Any:
    """Plain-Python copy of a config dataclass (for JSON), without Hydra's defaults list; with
    ``scene_only`` also without the per-class appearance fields."""
    if is_dataclass(node):
        return {f.name: to_dict(getattr(node, f.name), scene_only) for f in fields(node)
                if f.name != "defaults" and not (scene_only and f.metadata.get("appearance"))}
    if isinstance(node, dict):
        return {k: to_dict(v, scene_only) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_dict(v, scene_only) for v in node]
    return node


def scene_part(cfg: ArctiqueConf) -> Dict[str, Any]:
    """The config values that shape the scene (with the field of view, optics.image_size * mpp)."""
    return {"tissue": to_dict(cfg.tissue, True), "cells": to_dict(cfg.cells, True)}

