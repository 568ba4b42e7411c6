"""The scanner model (``arctique/scanner.py``): optics, white balance, sensor and JPEG on known
images, and end to end that it changes the image of a real render but never its labels."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from arctique.config import OpticsConf, ScannerConf
from arctique.io.dataset import sample_files
from arctique.scanner import psf_sigma_px, scan, srgb_decode, srgb_uint8

from .conftest import render_small

OPTICS = OpticsConf(image_size=96, mpp=0.25)
# An ideal sensor: no shot or read noise that could be mistaken for blur, no compression.
QUIET = ScannerConf(enabled=True, full_well=1e7, read_noise=0.0, jpeg_quality=0, defocus_um=0.0, lateral_ca_um=0.0)


def edge(size: int = 96) -> np.ndarray:
    """A dark half-plane (transmittance 0.1) on glass (the optics' white level)."""
    image = np.full((size, size, 3), OPTICS.white_level)
    image[:, : size // 2] = 0.1
    return image


def edge_width_px(image: np.ndarray, channel: int) -> float:
    """10-90 % rise distance of the middle row across the edge, in pixels (linear values)."""
    row = srgb_decode(image[image.shape[0] // 2, :, channel] / 255)
    lo, hi = row[:10].mean(), row[-10:].mean()
    rising = (row - lo) / (hi - lo)
    return float(np.argmax(rising > 0.9) - np.argmax(rising > 0.1))


def test_without_a_scanner_the_image_is_the_srgb_render():
    linear = np.random.default_rng(0).uniform(0, 1, (32, 32, 3))
    out, record = scan(linear, ScannerConf(enabled=False), OPTICS, 1)
    assert np.array_equal(out, srgb_uint8(linear)) and record == {"enabled": False}


def test_glass_comes_out_at_the_configured_grey_levels():
    glass = np.full((64, 64, 3), OPTICS.white_level)
    out, _ = scan(glass, replace(QUIET, glass_rgb=[236.0, 240.0, 244.0]), OPTICS, 1)
    assert np.abs(out.reshape(-1, 3).astype(int) - [236, 240, 244]).max() <= 1


def test_the_point_spread_function_widens_with_wavelength_and_a_smaller_aperture():
    sharp, _ = scan(edge(), QUIET, OPTICS, 1)
    widths = [edge_width_px(sharp, c) for c in range(3)]
    assert widths[0] >= widths[1] >= widths[2]  # red blurs most (sigma ~ lambda / NA)
    assert psf_sigma_px(QUIET, OPTICS.mpp)[0] > psf_sigma_px(QUIET, OPTICS.mpp)[2]
    soft = [edge_width_px(scan(edge(), replace(QUIET, numerical_aperture=na), OPTICS, 1)[0], 1)
            for na in (0.95, 0.5, 0.25)]
    assert soft[0] < soft[1] < soft[2]
    # the measured 10-90 % width of a Gaussian edge is 2.56 sigma
    sigma = psf_sigma_px(replace(QUIET, numerical_aperture=0.25), OPTICS.mpp)[1]
    assert soft[2] == pytest.approx(2.56 * sigma, abs=1.0)


def _darkness_centre(image: np.ndarray, channel: int) -> np.ndarray:
    """(row, col) centre of the absorption (glass less the linear value) of one channel."""
    linear = srgb_decode(image[..., channel] / 255)
    dark = np.clip(linear[0, 0] - linear, 0, None)
    rows, cols = np.indices(dark.shape)
    return np.array([(rows * dark).sum(), (cols * dark).sum()]) / dark.sum()


def test_lateral_chromatic_aberration_moves_red_and_blue_apart_by_the_recorded_shift():
    """Red moves by the recorded shift against green, blue by its opposite, never farther than
    ``lateral_ca_um``; each seed takes its own size and direction; at 0 nothing moves."""
    square = np.full((96, 96, 3), OPTICS.white_level)
    square[36:60, 36:60] = 0.1
    shifts = []
    for seed in range(6):
        out, record = scan(square, replace(QUIET, lateral_ca_um=1.0), OPTICS, seed)
        shift = np.asarray(record["red_shift_px"])
        assert np.hypot(*shift) <= 1.0 / OPTICS.mpp + 1e-9
        green = _darkness_centre(out, 1)
        assert np.allclose(_darkness_centre(out, 0) - green, shift, atol=0.05)
        assert np.allclose(_darkness_centre(out, 2) - green, -shift, atol=0.05)
        shifts.append(shift)
    assert len({tuple(np.sign(s)) for s in shifts}) >= 2 and np.ptp(np.hypot(*np.transpose(shifts))) > 0.5
    out, record = scan(square, QUIET, OPTICS, 0)
    assert record["red_shift_px"] == [0.0, 0.0]
    assert np.allclose(_darkness_centre(out, 0), _darkness_centre(out, 1), atol=0.01)


def test_residual_defocus_blurs_some_of_the_field_more_than_the_rest():
    stripes = np.full((96, 96, 3), OPTICS.white_level)
    stripes[:, ::4] = 0.1
    focused, _ = scan(stripes, QUIET, OPTICS, 1)
    out, record = scan(stripes, replace(QUIET, defocus_um=3.0, defocus_scale_um=10.0), OPTICS, 1)
    assert 0 < record["defocus_um_max"] <= 3.0 and record["defocus_sigma_px_max"] > 1
    contrast = out.astype(float).std(axis=1).mean(axis=1)  # stripe contrast per row
    assert contrast.max() - contrast.min() > 5  # some rows much blurrier than others
    assert contrast.max() <= focused.astype(float).std(axis=1).mean() + 1


def test_shot_noise_follows_the_full_well():
    glass = np.full((128, 128, 3), OPTICS.white_level)
    for full_well in (1000.0, 10000.0):
        out, _ = scan(glass, replace(QUIET, full_well=full_well), OPTICS, 1)
        signal = srgb_decode(out[..., 1] / 255)
        expected = np.sqrt(signal.mean() / full_well)  # Poisson: SD of e- / full well
        assert signal.std() == pytest.approx(expected, rel=0.25)


def test_sensor_noise_is_the_same_wherever_the_signal_is():
    """Re-rendered with one region changed, a scan keeps every other pixel's noise: the difference
    of the two scans lies in that region (and the blur's reach around it) only."""
    image = np.full((96, 96, 3), 0.5 * OPTICS.white_level)
    changed = image.copy()
    changed[40:50, 40:50] *= 0.5
    cfg = replace(QUIET, full_well=700.0, read_noise=10.0)
    a, b = scan(image, cfg, OPTICS, 7)[0], scan(changed, cfg, OPTICS, 7)[0]
    differs = np.abs(a.astype(int) - b).max(-1) > 0
    assert differs[40:50, 40:50].all()
    assert not differs[:30].any() and not differs[60:].any() and not differs[:, :30].any()
    assert a.astype(float).std() > 2  # the noise is there


def test_scans_are_seeded_and_jpeg_compresses_in_blocks():
    image = np.clip(edge() + np.random.default_rng(1).normal(0, 0.05, (96, 96, 3)), 0, 1)
    cfg = ScannerConf(enabled=True)
    a, _ = scan(image, cfg, OPTICS, 7)
    assert np.array_equal(a, scan(image, cfg, OPTICS, 7)[0])
    assert not np.array_equal(a, scan(image, cfg, OPTICS, 8)[0])
    lossless, _ = scan(image, replace(cfg, jpeg_quality=0), OPTICS, 7)
    rough, record = scan(image, replace(cfg, jpeg_quality=20), OPTICS, 7)
    assert record["jpeg_quality"] == 20
    error = np.abs(rough.astype(float) - lossless).mean()
    assert 0.5 < error < 10
    # 4:2:0 chroma: the colour of neighbouring 2 x 2 pixels is nearly shared
    chroma = rough.astype(float)[..., 0] - rough[..., 1]
    assert np.abs(chroma[0::2] - chroma[1::2]).mean() < np.abs(lossless.astype(float)[..., 0] - lossless[..., 1]
                                                                 ).std()


def test_the_scanner_changes_the_image_of_a_render_never_its_labels(small_dataset, tmp_path):
    scanned_root, ideal = small_dataset, render_small(tmp_path, extra=("scanner=none",))
    files = sample_files(3)
    for key in ("instance", "semantic", "cytoplasm", "tissue"):
        assert np.array_equal(tifffile.imread(scanned_root / files[key]), tifffile.imread(ideal / files[key]))
    from PIL import Image
    scanned = np.asarray(Image.open(scanned_root / files["image"])).astype(float)
    plain = np.asarray(Image.open(ideal / files["image"])).astype(float)
    assert 1 < np.abs(scanned - plain).mean() < 30
    meta = json.loads((scanned_root / files["metadata"]).read_text())["sample"]["scanner"]
    assert meta["enabled"] and meta["jpeg_quality"] == 0 and len(meta["psf_sigma_px"]) == 3
    assert json.loads((ideal / files["metadata"]).read_text())["sample"]["scanner"] == {"enabled": False}
