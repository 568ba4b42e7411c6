"""Controlled variations: sweeps, the variation command and the documented sliders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage

from arctique.io.dataset import Dataset
from arctique.pipeline import render_samples
from arctique.scene import load
from arctique.classes import CLASS_IDS
from arctique.scene.model import BLOOD, RIP
from arctique.commands.vary import main as vary_main
from arctique.variation import plan

from .conftest import SMALL, run_cli

LABEL_FILES = ("masks/instance/{i}.tif", "masks/semantic/{i}.tif", "masks/cytoplasm/{i}.tif",
               "masks/instance_3d/{i}/{i}_stack.npy")
TISSUE_FILE = "masks/tissue/{i}.tif"  # tissue compartments: kept unless tears or blood change
# 64 um field at 0.5 um/px: seed 3 shows epithelium with goblets and all stroma types. The ideal
# image (scanner=none), so that each slider's effect is measured without the scanner's blur and
# noise; the scanner's own sliders are measured with it on (SCANNER_SLIDERS).
SLIDER_BASE = ("optics.image_size=128", "optics.mpp=0.5", "optics.samples=4", "output.z_slices=4",
               "cells.mesh_subdivisions=2", "output.preview=false", "tissue.section.thickness_um=[4,4]",
               "scanner=none")


def same_labels(a: Path, b: Path, index: int, scene: bool = True) -> bool:
    """Nuclear labels identical; with ``scene`` also the saved scene and the tissue mask."""
    files = LABEL_FILES + (("scenes/{i}.npz", TISSUE_FILE) if scene else ())
    return all((a / f.format(i=index)).read_bytes() == (b / f.format(i=index)).read_bytes() for f in files)


def image(root: Path, index: int) -> np.ndarray:
    return np.asarray(Image.open(root / f"images/image_{index}.png"), float)


def test_sweep_gives_one_folder_per_value_with_identical_labels(tmp_path):
    run_cli(tmp_path, "-m", "seed=0,1", "nuclei.intensity=0.2,0.8", *SMALL)
    roots = sorted((tmp_path / "rendered").iterdir())
    assert [r.name for r in roots] == ["nuclei.intensity=0.2", "nuclei.intensity=0.8"]
    light, dark = roots
    for seed in (0, 1):
        assert Dataset(light).completed() == Dataset(dark).completed() == {0, 1}
        assert same_labels(light, dark, seed)
        nuclei = tifffile.imread(light / f"masks/instance/{seed}.tif") > 0
        assert image(dark, seed)[nuclei].mean() < image(light, seed)[nuclei].mean() - 10


def test_sweep_honours_an_explicit_root_with_interpolation(tmp_path):
    run_cli(tmp_path, "-m", "seed=4", "nuclei.intensity=0.3,0.5", "output.root=out/${nuclei.intensity}", *SMALL)
    assert Dataset(tmp_path / "out/0.3").completed() == Dataset(tmp_path / "out/0.5").completed() == {4}
    assert not (tmp_path / "rendered").exists()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vary")
    run_cli(root, "seed=3", *SLIDER_BASE)
    return root / "rendered"


def test_variation_command_keeps_saved_geometry_for_rendering_changes(base):
    vary_main([str(base), "stain.eosin_intensity=2.0", "optics.focus_offset_um=1.5"])
    out = base / "variations/optics.focus_offset_um=1.5,stain.eosin_intensity=2.0"
    assert Dataset(out).completed() == {3}
    assert same_labels(base, out, 3)
    params = json.loads((out / "parameters/3.json").read_text())
    assert params["stain"]["eosin_intensity"] == 2.0 and params["optics"]["focus_offset_um"] == 1.5
    assert params["seed"] == 3 and params["output"]["root"] == str(out)
    assert not np.array_equal(image(base, 3), image(out, 3))


def test_variation_command_rebuilds_scene_changes_from_the_same_streams(base, tmp_path):
    density = json.loads((base / "parameters/3.json").read_text())["cells"]["stroma_density"]
    changes = tmp_path / "sparser.yaml"
    changes.write_text(f"cells:\n  stroma_density: {density / 2}\n")
    vary_main([str(base), "--changes", str(changes)])
    out = base / "variations/sparser"
    a, b = load(base / "scenes/3.npz"), load(out / "scenes/3.npz")
    assert np.array_equal(a.crypts.centre, b.crypts.centre) and repr(a.section) == repr(b.section)
    epi = CLASS_IDS["EPI"]
    assert np.array_equal(a.cells.centre[a.cells.cls == epi], b.cells.centre[b.cells.cls == epi])
    # the immune cells of the stroma (fibroblasts share their class with the capillaries' endothelium)
    immune = [CLASS_IDS[name] for name in ("PLA", "LYM", "EOS", "NEU")]
    # half the density (the default crowds the stroma about as far as random placement fits): about
    # half the cells
    assert np.isin(b.cells.cls, immune).sum() < 0.65 * np.isin(a.cells.cls, immune).sum()


def test_per_class_appearance_changes_reuse_the_saved_scene(base, tmp_path):
    """``cells.types.<CLASS>`` holds shape and look: look changes re-render the saved scene, shape
    changes rebuild it (planned only, nothing rendered)."""
    lym = json.loads((base / "parameters/3.json").read_text())["cells"]["types"]["LYM"]
    look = plan(base, OmegaConf.from_dotlist([f"cells.types.LYM.hematoxylin={lym['hematoxylin'] / 2}",
                                              f"cells.types.LYM.rim={lym['rim'] + 0.5}"]), tmp_path / "look")
    assert look[0].scene_file == base / "scenes/3.npz"
    lo, hi = lym["length_um"]
    shape = plan(base, OmegaConf.from_dotlist([f"cells.types.LYM.length_um=[{lo},{hi + 0.5}]"]), tmp_path / "shape")
    assert shape[0].scene_file is None


def test_variation_command_rejects_bad_changes_before_rendering(base, capsys):
    for args in (["nuclei.intensity=1.7"], ["nuclei.intensiti=0.3"], ["seed=9"], [],
                 ["nuclei.intensity=0.3", "output.overwrite=true"], ["nuclei.intensity=0.3", "n_samples=5"],
                 ["nuclei.intensity=0.3", f"output.root={base / 'elsewhere'}"]):
        with pytest.raises(SystemExit) as exit_info:
            vary_main([str(base), *args, "--name", "bad"])
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nuclei.intensity=1.7 is out of range: allowed [0, 1]" in err and "intensiti" in err
    assert "output.overwrite: a variation keeps" in err and "--overwrite" in err and "--samples" in err
    assert "output.root: a variation keeps" in err and "--into" in err
    assert not (base / "variations/bad").exists() and not (base / "elsewhere").exists()
    # a name is one folder inside variations/, never a path out of it
    with pytest.raises(SystemExit) as exit_info:
        vary_main([str(base), "nuclei.intensity=0.3", "--name", "../../escape"])
    assert exit_info.value.code == 2 and "--name='../../escape' is not a folder name" in capsys.readouterr().err
    assert not (base.parent / "escape").exists()


# ----------------------------------------------------------------------------------------- sliders


def _od(rgb: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(rgb, 1, 255) / 255.0)


def nuclear_od(root: Path, i: int) -> float:
    return float(_od(image(root, i))[tifffile.imread(root / f"masks/semantic/{i}.tif") > 0].mean())


def class_mean_od(cls: str) -> Callable[[Path, int], float]:
    """Mean OD (over R, G, B) of a class's nuclei."""
    def stat(root: Path, i: int) -> float:
        nuclei = tifffile.imread(root / f"masks/semantic/{i}.tif") == CLASS_IDS[cls]
        return float(_od(image(root, i))[nuclei].mean())
    return stat


def class_shift(cls: str) -> Callable[[Path, int], float]:
    """Distance of the mean OD colour (R, G, B) of a class's nuclei from that in the dataset the
    slider's variations were made from (``<base>/sliders/<key>=<value>``)."""
    def mean_od(root: Path, i: int) -> np.ndarray:
        semantic = tifffile.imread(root / f"masks/semantic/{i}.tif")
        assert (semantic == CLASS_IDS[cls]).any(), cls
        return _od(image(root, i))[semantic == CLASS_IDS[cls]].mean(0)

    def stat(root: Path, i: int) -> float:
        return float(np.linalg.norm(mean_od(root, i) - mean_od(root.parent.parent, i)))
    return stat


def rim_contrast(cls: str) -> Callable[[Path, int], float]:
    """Mean OD of a class's nuclear margins (pixels within two of the outline) less that of their
    interiors: a rim moves chromatin to the membrane and clears the interior."""
    def stat(root: Path, i: int) -> float:
        od = _od(image(root, i)).mean(-1)
        nuclei = tifffile.imread(root / f"masks/semantic/{i}.tif") == CLASS_IDS[cls]
        interior = ndimage.binary_erosion(nuclei, iterations=2)
        assert interior.sum() > 50, cls
        return float(od[nuclei & ~interior].mean() - od[interior].mean())
    return stat


def chromatin_texture(root: Path, i: int) -> float:
    """Mean over nuclei of the grey-level SD inside each (two pixels in from its outline, away from
    the edge's own gradient): coarse chromatin clumps mottle a nucleus."""
    grey = image(root, i).mean(-1)
    instance = tifffile.imread(root / f"masks/instance/{i}.tif")
    sds = []
    for label in np.unique(instance[instance > 0]):
        interior = ndimage.binary_erosion(instance == label, iterations=2)
        if interior.sum() >= 20:
            sds.append(grey[interior].std())
    assert len(sds) >= 10
    return float(np.mean(sds))


def stroma_green_od(root: Path, i: int) -> float:
    """Eosin absorbs green: green OD outside nuclei."""
    return float(_od(image(root, i))[..., 1][tifffile.imread(root / f"masks/instance/{i}.tif") == 0].mean())


def mean_od(root: Path, i: int) -> float:
    return float(_od(image(root, i)).mean())


def nuclear_contrast(root: Path, i: int) -> float:
    """Nuclear minus non-nuclear OD: blur spreads nuclear absorption into the surroundings."""
    od = _od(image(root, i)).mean(-1)
    nuclei = tifffile.imread(root / f"masks/instance/{i}.tif") > 0
    return float(od[nuclei].mean() - od[~nuclei].mean())


def white_fraction(root: Path, i: int) -> float:
    return float((image(root, i).min(-1) > 235).mean())


def red_fraction(root: Path, i: int) -> float:
    """Share of pixels as bright in red and as dark in green as only red blood cells are."""
    rgb = image(root, i)
    return float((rgb[..., 0] - rgb[..., 1] > 130).mean())


def red_minus_blue(root: Path, i: int) -> float:
    rgb = image(root, i)
    return float((rgb[..., 0] - rgb[..., 2]).mean())


def brightness(root: Path, i: int) -> float:
    return float(image(root, i).mean())


def epi_area(root: Path, i: int) -> float:
    return float((tifffile.imread(root / f"masks/semantic/{i}.tif") == CLASS_IDS["EPI"]).sum())


def stroma_count(root: Path, i: int) -> float:
    cells = json.loads((root / f"metadata/{i}.json").read_text())["cells"]
    return float(sum(c["class_name"] != "EPI" for c in cells))


# The scanner sliders' smallest steps: about half those measured on this sample (sharpness 1.11
# and 0.75 between the apertures).
SHARPNESS_STEP, BLOCKINESS_STEP = 0.4, 0.1
# Which outputs a slider keeps: the saved scene (rendering only), the nuclear labels only (tissue
# features outside the nuclei: rebuilt from unchanged cell streams) or neither.
SCENE, LABELS, NEITHER = "scene", "labels", "neither"
# slider key -> (values in increasing order, statistic, +1 increasing / -1 decreasing, what it keeps,
# smallest step of the statistic between neighbouring values: about half the step measured on this
# sample, so that a slider whose effect fades or breaks fails rather than any positive step passing)
SLIDERS: Dict[str, Tuple[List, Callable[[Path, int], float], int, str, float]] = {
    "nuclei.intensity": ([0.2, 0.5, 0.9], nuclear_od, +1, SCENE, 0.06),
    "stain.eosin_intensity": ([0.5, 1.0, 2.0], stroma_green_od, +1, SCENE, 0.04),
    "optics.focus_offset_um": ([0.0, 3.0, 6.0], nuclear_contrast, -1, SCENE, 0.006),
    "tissue.section.thickness_um": ([[3, 3], [5, 5], [8, 8]], mean_od, +1, NEITHER, 0.05),
    "tissue.rips.strength": ([0.0, 0.05, 0.2], white_fraction, +1, LABELS, 0.013),
    "tissue.blood.strength": ([0.0, 5.0, 20.0], red_fraction, +1, LABELS, 0.0005),
    "stain.colour_shift": ([-1.0, 0.0, 1.0], red_minus_blue, +1, SCENE, 10.0),
    "stain.overstaining": ([0.0, 0.5, 1.0], stroma_green_od, +1, SCENE, 0.01),
    "stain.goblet_clarity": ([0.0, 0.5, 1.0], brightness, +1, SCENE, 0.6),
    "cells.nucleus_scale.EPI": ([0.7, 1.0, 1.3], epi_area, +1, NEITHER, 100.0),
    "cells.stroma_density": ([0.5, 1.0, 2.0], stroma_count, +1, NEITHER, 3.0),
    # Lymphocytes move away from their own look. (Their distance to the plasma cells' mean colour is
    # not monotone: plasma-cell nuclei also show the eosin of the cytoplasm around them, which the
    # slider does not give lymphocytes; on this sample 0.066, 0.054, 0.059 at 0, 0.5, 1. The shift
    # itself is 0.043 at 0.5 and 0.048 at 1.)
    "nuclei.lym_to_pla": ([0.0, 0.5, 1.0], class_shift("LYM"), +1, SCENE, 0.002),
    "cells.types.PLA.rim": ([0.0, 1.0, 2.0], rim_contrast("PLA"), +1, SCENE, 0.009),
    "nuclei.chromatin_contrast": ([0.0, 1.5, 3.0], chromatin_texture, +1, SCENE, 0.18),
}


# Sliders that change tissue compartments: the share of that compartment in masks/tissue grows.
TISSUE_SHARES = {"tissue.rips.strength": RIP, "tissue.blood.strength": BLOOD}


def sharpness(root: Path, i: int) -> float:
    """Mean grey-level difference of horizontally neighbouring pixels."""
    return float(np.abs(np.diff(image(root, i).mean(-1), axis=1)).mean())


def blockiness(root: Path, i: int) -> float:
    """Grey-level steps across JPEG's 8 x 8 block borders over those inside the blocks."""
    steps = np.abs(np.diff(image(root, i).mean(-1), axis=1))
    border = np.arange(steps.shape[1]) % 8 == 7
    return float(steps[:, border].mean() / steps[:, ~border].mean())


def channel_misregistration(root: Path, i: int) -> float:
    """Shift (px) between the red and the blue image, by phase correlation of their gradients:
    twice each one's shift against green."""
    from skimage.registration import phase_cross_correlation

    rgb = image(root, i).astype(float)
    edges = [np.hypot(*np.gradient(rgb[..., c])) for c in (0, 2)]
    shift, _, _ = phase_cross_correlation(edges[0], edges[1], upsample_factor=20)
    return float(np.hypot(*shift))


# The scanner's sliders, with the scanner turned on (scanner.enabled=true) in every variation.
SCANNER_SLIDERS = {
    "scanner.numerical_aperture": ([0.2, 0.4, 0.95], sharpness, +1, SHARPNESS_STEP),
    "scanner.jpeg_quality": ([20, 50, 95], blockiness, -1, BLOCKINESS_STEP),
    "scanner.lateral_ca_um": ([0.0, 1.0, 3.0], channel_misregistration, +1, 1.2),
}


def render_slider(base: Path, key: str, values: List, on: Sequence[str] = ()) -> Tuple[List[Path], List[bool]]:
    """Variations of ``base`` with ``key`` at each value (and the changes ``on``): their folders and
    whether each re-rendered the saved scene."""
    roots, kept = [], []
    for value in values:
        out = base / "sliders" / f"{key}={value}"
        jobs = plan(base, OmegaConf.from_dotlist([*on, f"{key}={json.dumps(value)}"]), out)
        counts = render_samples(Dataset(out), jobs, overwrite=False, progress=False)
        assert counts.rendered + counts.skipped == 1 and not counts.failed
        roots.append(out)
        kept.append(jobs[0].scene_file is not None)
    return roots, kept


def assert_monotone(key: str, values: List, roots: List[Path], statistic: Callable[[Path, int], float],
                    direction: int, min_step: float) -> None:
    stats = [statistic(r, 3) for r in roots]
    steps = np.diff(stats) * direction
    assert (steps >= min_step).all(), f"{key}: {dict(zip(map(str, values), stats))}, steps >= {min_step}"


@pytest.mark.parametrize("key", list(SCANNER_SLIDERS))
def test_scanner_slider_has_a_monotone_effect_and_keeps_the_scene(base, key):
    values, statistic, direction, min_step = SCANNER_SLIDERS[key]
    # no residual defocus: its blur grows with the aperture (radius |dz| tan(asin NA))
    roots, kept = render_slider(base, key, values, ["scanner.enabled=true", "scanner.defocus_um=0"])
    assert all(kept)
    assert_monotone(key, values, roots, statistic, direction, min_step)
    assert all(same_labels(base, r, 3) for r in roots)


@pytest.mark.parametrize("key", list(SLIDERS))
def test_slider_has_a_monotone_effect(base, key):
    values, statistic, direction, keeps, min_step = SLIDERS[key]
    base_value = OmegaConf.select(OmegaConf.load(base / "parameters/3.json"), key)
    roots, kept = render_slider(base, key, values)
    assert kept == [keeps == SCENE or value == base_value for value in values]
    assert_monotone(key, values, roots, statistic, direction, min_step)
    if keeps != NEITHER:
        assert all(same_labels(roots[0], r, 3, scene=keeps == SCENE) for r in roots[1:])
    if key in TISSUE_SHARES:
        shares = [np.mean(tifffile.imread(r / TISSUE_FILE.format(i=3)) == TISSUE_SHARES[key]) for r in roots]
        assert (np.diff(shares) > 0).all(), f"{key}: tissue mask shares {shares}"


def test_rim_moves_chromatin_to_the_membrane_and_keeps_the_nuclear_mean(base):
    """A rim darkens the margin of a nucleus by clearing its interior: the nucleus' mean OD stays
    while the margin can take the chromatin (rim 1: 1.4 times the mean), and a stronger rim, with
    the margin at its darkest, pales the nucleus (vesicular)."""
    roots, _ = render_slider(base, "cells.types.PLA.rim", [0.0, 1.0, 2.5])
    even, rimmed, vesicular = (class_mean_od("PLA")(r, 3) for r in roots)
    assert abs(rimmed / even - 1) < 0.05, (even, rimmed)
    assert vesicular < 0.95 * rimmed, (rimmed, vesicular)
