"""``arctique-summary --realism``: the two-sample test against real images, on small real renders.

The "real" images here are made by the test from the renders themselves: the same pixels (and the
same pixels at another pixel size) must be indistinguishable, the same fields blurred and re-coloured
must be told apart, so the test is shown to see differences and not to invent them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from arctique import realism
from arctique.io.dataset import sample_files

SEEDS = (3, 4, 5)  # the export_dataset fixture: 128 x 128 px at 1 um/px


def summary(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arctique.commands.summary", *map(str, args)],
                          capture_output=True, text=True)


def images_of(dataset: Path) -> list:
    return [np.asarray(Image.open(dataset / sample_files(i)["image"]).convert("RGB")) for i in SEEDS]


def write_sources(folder: Path, images, transform=lambda im: im, upsample: int = 1) -> Path:
    """Two sources (sub-folders), each holding every image transformed, upsampled by pixel repetition."""
    for source in ("lab_a", "lab_b"):
        (folder / source).mkdir(parents=True)
        for k, im in enumerate(images):
            im = np.repeat(np.repeat(transform(im), upsample, axis=0), upsample, axis=1)
            Image.fromarray(im).save(folder / source / f"field_{k}.png")
    return folder


def blurred_and_tinted(im: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    soft = ndimage.gaussian_filter(im.astype(float), (2.5, 2.5, 0))
    return np.clip(soft * [1.0, 0.75, 0.95], 0, 255).astype(np.uint8)


def run_realism(dataset: Path, real: Path, *extra: object) -> dict:
    proc = summary(dataset, "--realism", real, "--crop-px", 48, "--json", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["realism"]


def test_the_same_pixels_at_another_pixel_size_cannot_be_told_apart(export_dataset, tmp_path):
    """Real = our own fields at 0.5 um/px (each pixel repeated 2 x 2): resampled back to the common
    1 um/px they are our pixels again, so the forest can do no better than chance."""
    real = write_sources(tmp_path / "real", images_of(export_dataset), upsample=2)
    r = run_realism(export_dataset, real, "--real-mpp", 0.5, "--montage", tmp_path / "m.png")
    assert r["settings"]["common_mpp_um"] == 1.0 and r["settings"]["crop_um"] == 48
    assert r["images"] == {"ours": 3, "real": 6, "real_per_source": {"lab_a": 3, "lab_b": 3}}
    assert r["crops"] == {"ours": 24, "real": 48}
    assert r["c2st"]["ours"] < 0.75
    assert set(r["c2st"]["sources"]) == {"lab_a", "lab_b"} and r["c2st"]["sources_max"] < 0.75
    # as many of ours as a real source holds: the same test, drawn once
    assert r["c2st"]["ours_matched"] == {"images": 3, "source_images": 3, "mean": r["c2st"]["ours"],
                                         "draws": [r["c2st"]["ours"]]}
    low, high = r["c2st"]["ours_interval"]
    assert 0 <= low <= r["c2st"]["ours"] <= high <= 1 and high - low > 0.05  # three images a side: wide
    names = [f["name"] for f in r["features"]]
    assert {"eosin_mean", "saturation_mean", "gradient_p99", "lbp_0", "glcm_contrast_d1", "spectrum_slope",
            "near_white_share", "nuclei_per_1000_um2", "nucleus_area_median_um2"} <= set(names)
    montage = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    assert montage.shape[1] == 6 * (48 + 4) + 4  # six crops a row at the common pixel size
    # every montage crop is a crop of some field: the upper rows come from our images
    first = montage[18 + 0:18 + 48, 4:4 + 48]
    assert any((first == im[y:y + 48, x:x + 48]).all() for im in images_of(export_dataset)
               for y in range(128 - 47) for x in range(128 - 47))


def test_blurred_and_recoloured_fields_are_told_apart_and_the_features_say_how(export_dataset, tmp_path):
    real = write_sources(tmp_path / "real", images_of(export_dataset), blurred_and_tinted)
    r = run_realism(export_dataset, real, "--real-mpp", 1.0)
    assert r["c2st"]["ours"] > 0.95
    assert r["c2st"]["sources_max"] < 0.75  # the two real sources hold the same fields
    assert r["c2st"]["ours_interval"][0] > 0.85  # told apart whichever images are drawn
    by_name = {f["name"]: f for f in r["features"]}
    assert by_name["gradient_p99"]["ours"] > by_name["gradient_p99"]["real"]
    assert by_name["gradient_p99"]["difference"] > 1
    assert abs(r["features"][0]["difference"]) >= abs(r["features"][-1]["difference"])
    text = summary(export_dataset, "--realism", real, "--real-mpp", 1, "--crop-px", 48).stdout
    assert "two-sample test, balanced accuracy" in text and "lab_a" in text
    assert "95 % interval over resampled images" in text
    assert r["features"][0]["name"] in text


def test_ours_is_held_against_the_floor_with_as_many_images_as_a_real_source(export_dataset, tmp_path):
    """Real sources of two images each against three of ours: the matched test draws two of ours,
    matched_draws times, and still tells blurred, re-coloured fields apart; the text says so."""
    real = write_sources(tmp_path / "real", images_of(export_dataset)[:2], blurred_and_tinted)
    r = run_realism(export_dataset, real, "--real-mpp", 1.0)
    m = r["c2st"]["ours_matched"]
    assert m["images"] == 2 and m["source_images"] == 2
    assert len(m["draws"]) == realism.RealismSettings().matched_draws and min(m["draws"]) > 0.9
    text = summary(export_dataset, "--realism", real, "--real-mpp", 1, "--crop-px", 48).stdout
    assert "ours with 2 images, as many as a real source" in text
    # more real images per source than ours: no draw, and the report says to render more
    more = write_sources(tmp_path / "more", images_of(export_dataset) * 2, blurred_and_tinted)
    text = summary(export_dataset, "--realism", more, "--real-mpp", 1, "--crop-px", 48).stdout
    assert "ours has 3 images, a real source 6" in text


def test_sources_from_a_file_name_pattern(export_dataset, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, im in enumerate(images_of(export_dataset)):
        for patient in (7, 8):
            Image.fromarray(im).save(flat / f"p{patient}_field{k}.png")
    r = run_realism(export_dataset, flat, "--real-mpp", 1, "--real-source-pattern", r"^(p\d+)_")
    assert r["images"]["real_per_source"] == {"p7": 3, "p8": 3}


def test_tiff_pixel_size_is_read_from_its_resolution_tags(tmp_path):
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8), resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    assert realism.pixel_size_of(path) == pytest.approx(0.5)
    tifffile.imwrite(path, np.zeros((8, 8, 3), np.uint8))
    assert realism.pixel_size_of(path) is None


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or folder"),
    ("no_mpp", "no pixel size recorded; give --real-mpp"),
    ("small", "smaller than a 48 px crop"),
    ("unreadable", "cannot read"),
])
def test_bad_real_input_stops_with_one_line(export_dataset, tmp_path, case, message):
    real = tmp_path / "real"
    real.mkdir()
    images = images_of(export_dataset)
    Image.fromarray(images[0]).save(real / "a.png")
    Image.fromarray(images[1]).save(real / "b.png")
    extra = ["--real-mpp", 1]
    if case == "missing":
        real = tmp_path / "nowhere"
    elif case == "no_mpp":
        extra = []
    elif case == "small":
        Image.fromarray(images[0][:40, :40]).save(real / "c.png")
    else:
        (real / "c.png").write_bytes(b"not a png")
    proc = summary(export_dataset, "--realism", real, "--crop-px", 48, *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_realism_options_need_realism(export_dataset):
    proc = summary(export_dataset, "--montage", "x.png")
    assert proc.returncode == 2 and "--montage needs --realism" in proc.stderr
