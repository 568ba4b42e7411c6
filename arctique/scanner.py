"""What a slide scanner makes of the light that leaves the section: the image-formation step
between Cycles' render and the dataset's pixels. Appearance only: labels never see it.

Cycles renders the section's transmittance in 3D (absorption, the defocus of depth within the
slab) through an ideal pinhole-free lens; a scanner adds, in this order,

1. the objective's point-spread function: diffraction-limited, per colour channel, a Gaussian of
   sigma 0.21 lambda / NA (Zhang, Zerubia and Olivo-Marin, Applied Optics 2007);
2. a residual defocus that varies smoothly across the field (scanners focus at points, sections
   are thicker than the depth of field): a blur disc of radius |dz| tan(asin NA), as a Gaussian
   of half that radius;
3. lateral chromatic aberration: the objective magnifies red a little more than green and blue a
   little less, so off its axis the red and blue images slide apart radially; over a tile, small
   against the objective's field, that is one shift, red one way and blue the other, of a size and
   direction set by where the tile lies in the field (up to ``lateral_ca_um``): colour fringes at
   the edges of dark nuclei, as real scans show;
4. the white balance: empty glass at ``glass_rgb`` grey levels rather than 255;
5. the sensor: shot noise at ``full_well`` electrons for full scale (sRGB 255), plus read noise;
6. the sRGB transfer function to 8 bits, and (``jpeg_quality`` > 0) JPEG compression with 4:2:0
   chroma subsampling as slide scanners store their tiles.

``scanner.enabled=false`` (``scanner=none``) gives the ideal image: sRGB of the render at the
optics' white level.
"""

from __future__ import annotations

import io
from typing import Any, Dict, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage

from . import rng
from .config import OpticsConf, ScannerConf

GAUSSIAN_SIGMA_PER_LAMBDA_NA = 0.21  # widefield PSF as a Gaussian: sigma = 0.21 lambda / NA
DEFOCUS_LEVELS = 5  # blur levels between which the residual defocus is interpolated per pixel


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 transfer function of linear values in [0, 1]."""
    x = np.clip(linear, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    x = np.asarray(encoded, float)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def srgb_uint8(linear: np.ndarray) -> np.ndarray:
    return np.rint(srgb_encode(linear) * 255).astype(np.uint8)


def psf_sigma_px(scanner: ScannerConf, mpp: float) -> np.ndarray:
    """Gaussian sigma of the diffraction-limited PSF per R, G, B channel, in pixels."""
    wavelength_um = np.asarray(scanner.wavelength_nm, float) / 1000
    return GAUSSIAN_SIGMA_PER_LAMBDA_NA * wavelength_um / scanner.numerical_aperture / mpp


def defocus_field_um(shape: Tuple[int, int], scanner: ScannerConf, mpp: float,
                     gen: np.random.Generator) -> np.ndarray:
    """Residual defocus (um) over the field: smooth noise of correlation length
    ``defocus_scale_um``, scaled so that its largest magnitude is ``defocus_um``."""
    noise = gen.standard_normal(shape)
    smooth = ndimage.gaussian_filter(noise, scanner.defocus_scale_um / mpp / 2, mode="wrap")
    peak = np.abs(smooth).max()
    return smooth / peak * scanner.defocus_um if peak > 0 else smooth


def blurred(linear: np.ndarray, scanner: ScannerConf, mpp: float, gen: np.random.Generator
            ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The image through the objective: the in-focus PSF everywhere, widened per pixel by the
    residual defocus there (the image blurred at ``DEFOCUS_LEVELS`` widths, interpolated)."""
    psf = psf_sigma_px(scanner, mpp)
    defocus = np.abs(defocus_field_um(linear.shape[:2], scanner, mpp, gen))
    na = min(scanner.numerical_aperture, 0.999)  # a dry objective's cone; immersion NA > 1 caps at 90 deg
    defocus_sigma_px = defocus * np.tan(np.arcsin(na)) / 2 / mpp
    widest = defocus_sigma_px.max()
    widths = np.linspace(0, widest, DEFOCUS_LEVELS) if widest > 0 else [0.0]  # in focus: one level
    stack = np.stack([np.stack([ndimage.gaussian_filter(linear[..., c], np.hypot(psf[c], w), mode="nearest")
                                for c in range(3)], axis=-1) for w in widths])
    if widest > 0:
        position = defocus_sigma_px / widest * (DEFOCUS_LEVELS - 1)
        low = np.minimum(position.astype(int), DEFOCUS_LEVELS - 2)
        t = (position - low)[..., None]
        rows, cols = np.indices(low.shape)
        out = stack[low, rows, cols] * (1 - t) + stack[low + 1, rows, cols] * t
    else:
        out = stack[0]
    return out, {"psf_sigma_px": [round(float(p), 4) for p in psf],
                 "defocus_um_max": round(float(defocus.max()), 4),
                 "defocus_sigma_px_max": round(float(defocus_sigma_px.max()), 4)}


def chromatic_shift_px(scanner: ScannerConf, mpp: float, gen: np.random.Generator) -> np.ndarray:
    """(rows, cols) shift of the red image against the green, in pixels (blue's is the opposite):
    the tile's place in the objective's field sets its size, up to ``lateral_ca_um``, and its
    direction."""
    size = scanner.lateral_ca_um / mpp * np.sqrt(gen.uniform())  # a place uniform over the field's disc
    angle = gen.uniform(0, 2 * np.pi)
    return size * np.array([np.sin(angle), np.cos(angle)])


def aberrated(linear: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The red and blue images moved by ``shift`` and its opposite against the green."""
    if not np.any(shift):
        return linear
    out = linear.copy()
    for channel, sign in ((0, 1.0), (2, -1.0)):
        out[..., channel] = ndimage.shift(linear[..., channel], sign * shift, order=1, mode="nearest")
    return out


def sensor(linear: np.ndarray, scanner: ScannerConf, gen: np.random.Generator) -> np.ndarray:
    """Photo-electrons with shot noise plus read noise, back in units of full scale: signal 1 at
    ``full_well`` electrons.

    Shot noise is Poisson's at the normal limit (hundreds of electrons per pixel): its SD, the square
    root of the signal, times one fixed standard-normal field per seed. So a scene re-rendered with
    one appearance parameter changed gets the same noise wherever its signal is the same, and a
    pixel-wise difference shows the parameter's effect alone.
    """
    shot, read = gen.standard_normal((2,) + linear.shape)
    electrons = np.clip(linear, 0, None) * scanner.full_well
    return np.clip(electrons + np.sqrt(electrons) * shot + scanner.read_noise * read, 0, None) / scanner.full_well


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality), subsampling="4:2:0")
    with Image.open(buffer) as im:
        return np.asarray(im.convert("RGB"))


def scan(linear: np.ndarray, scanner: ScannerConf, optics: OpticsConf, seed: int
         ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """The sample's RGB uint8 image from Cycles' linear render (glass at ``optics.white_level``),
    and a record of what the scanner applied (for the metadata). Its randomness comes from the
    seed's ``scanner/*`` streams, so a scene re-rendered with the same settings scans the same."""
    if not scanner.enabled:
        return srgb_uint8(linear), {"enabled": False}
    image, record = blurred(linear.astype(np.float64), scanner, optics.mpp, rng.stream(seed, "scanner/defocus"))
    shift = chromatic_shift_px(scanner, optics.mpp, rng.stream(seed, "scanner/aberration"))
    image = aberrated(image, shift)
    gain = srgb_decode(np.asarray(scanner.glass_rgb, float) / 255) / optics.white_level
    image = sensor(image * gain, scanner, rng.stream(seed, "scanner/sensor"))
    out = srgb_uint8(image)
    if scanner.jpeg_quality:
        out = jpeg(out, scanner.jpeg_quality)
    return out, {"enabled": True, **record, "red_shift_px": [round(float(v), 4) for v in shift],
                 "glass_rgb": list(scanner.glass_rgb),
                 "full_well_e": scanner.full_well, "read_noise_e": scanner.read_noise,
                 "jpeg_quality": scanner.jpeg_quality}
