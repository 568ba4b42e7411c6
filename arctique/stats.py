"""Realism figures of a dataset, to compare with real H&E: nuclei per class (counts, densities,
sizes, shares), tissue compartment shares, optical-density statistics, the noise of near-white
areas and Macenko stain vectors, optionally beside the same image figures of real images.
``arctique-summary DATASET --stats [--reference FILE]`` prints them."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from .io import dataset as ds

# The reference stain vectors (unit OD directions, R G B) published with Macenko's method and used
# by most stain normalisers (mitkovetta/staining-normalization, StainTools, torchstain, histolab).
REFERENCE_H = (0.5626, 0.7201, 0.4062)
REFERENCE_E = (0.2159, 0.8012, 0.5581)

# Tissue mask codes until a sample's metadata lists its own under sample.tissue_classes.
DEFAULT_TISSUE_CLASSES = {"0": "outside", "1": "stroma", "2": "epithelium", "3": "lumen",
                          "4": "mucin", "5": "tear", "6": "blood"}

DENSITY_AREA_UM2 = 1e4  # densities are nuclei per 10,000 um^2 (a 100 x 100 um field)
TIFF_SUFFIXES = (".tif", ".tiff", ".svs")

# Image figures whose value is one number per R, G, B channel (or vector component).
VECTOR_FIGURES = ("tissue_mean_od", "macenko_h", "macenko_e", "nucleus_mean_od",
                  "in_focus_nucleus_mean_od")


@dataclass(frozen=True)
class Settings:
    """Thresholds of the image figures; recorded in the JSON so that figures stay comparable."""

    i0: float = 240.0  # grey level of unattenuated light in the OD conversion (Macenko's I0)
    beta: float = 0.15  # OD above which a channel counts as stained (Macenko's beta)
    alpha: float = 1.0  # percentile of the angles taken as the two extreme stain directions
    tissue_od: float = 0.15  # OD summed over R, G, B above which a pixel is tissue (mean 0.05)
    white_min: int = 235  # a pixel is near-white when each of R, G, B exceeds this
    window_px: int = 5  # side of the square window of the local standard deviation
    focus_um: float = 1.0  # nuclei with |depth_to_focus_um| <= this count as in focus
    min_stained_px: int = 100  # fewer stained pixels than this give no Macenko estimate


def tissue_mask_file(index: int) -> str:
    return f"masks/tissue/{index}.tif"


def optical_density(rgb: np.ndarray, i0: float) -> np.ndarray:
    """Per-channel OD = -log10((I + 1) / I0); the +1 keeps black finite, and I0 below 255 puts the
    scanner's white (about 240) at OD 0, so brighter pixels come out slightly negative."""
    return -np.log10((rgb[..., :3].astype(np.float64) + 1.0) / i0)


def macenko(od: np.ndarray, beta: float, alpha: float,
            min_pixels: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Hematoxylin and eosin OD unit vectors by Macenko et al., "A method for normalizing histology
    slides for quantitative analysis", ISBI 2009: pixels with OD > beta in every channel are
    projected onto the plane of the two largest eigenvectors of their OD covariance; the directions
    at the alpha and 100 - alpha percentiles of their angle in that plane are the two stains, and
    hematoxylin is the one with the larger red OD. None with fewer than ``min_pixels`` such pixels.

    The principal eigenvector is turned towards the mean OD: ``eigh`` returns either sign, and with
    the wrong one the angles would straddle +-pi. OD is log10 here, like every figure of the report;
    the reference code (and torchstain, whose estimate this matches given the same OD) uses the
    natural log, so its beta = 0.15 is 0.065 here, which moves real-image vectors by about 1 deg.
    torchstain is not used: it exposes the vectors only as the side effect of fitting a
    normaliser and fails on images with no stained pixels."""
    px = od.reshape(-1, 3)
    px = px[(px > beta).all(axis=1)]
    if len(px) < min_pixels:
        return None
    plane = np.linalg.eigh(np.cov(px.T))[1][:, [2, 1]]
    if px.mean(axis=0) @ plane[:, 0] < 0:
        plane[:, 0] *= -1
    xy = px @ plane
    phi = np.percentile(np.arctan2(xy[:, 1], xy[:, 0]), [alpha, 100 - alpha])
    a, b = (plane @ np.array([np.cos(p), np.sin(p)]) for p in phi)
    return (a, b) if a[0] > b[0] else (b, a)


def angle_deg(u: Sequence[float], v: Sequence[float]) -> float:
    """Angle between two OD directions, in degrees."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    cos = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _window_sum(x: np.ndarray, window_px: int) -> np.ndarray:
    """Sums over window_px squares (per channel); exact for integer-valued x, unlike a running
    mean, so that a flat background gives a standard deviation of exactly 0."""
    ones = np.ones(window_px)
    return ndimage.correlate1d(ndimage.correlate1d(x, ones, axis=0), ones, axis=1)


def near_white_noise(rgb: np.ndarray, white_min: int, window_px: int) -> Optional[float]:
    """Median local standard deviation (window_px square, averaged over R, G, B) in grey levels, over
    pixels whose whole window is near-white: the sensor and compression noise of glass and lumen,
    which a noiseless render lacks. Windows touching tissue are left out so edges do not count.
    None when no window is entirely near-white."""
    x = rgb[..., :3].astype(np.float64)
    n = window_px * window_px
    s1, s2 = _window_sum(x, window_px), _window_sum(x * x, window_px)
    std = (np.sqrt(n * s2 - s1 * s1) / n).mean(axis=2)
    white = ndimage.binary_erosion((rgb[..., :3] > white_min).all(axis=2),
                                   np.ones((window_px, window_px), bool))
    return float(np.median(std[white])) if white.any() else None


def _mean_od(od: np.ndarray, mask: np.ndarray) -> Optional[List[float]]:
    return od[mask].mean(axis=0).tolist() if mask.any() else None


def image_figures(rgb: np.ndarray, s: Settings) -> Dict[str, Any]:
    """The figures of one RGB image that need no labels, so that real images get them too."""
    od = optical_density(rgb, s.i0)
    tissue = od.sum(axis=2) > s.tissue_od
    stains = macenko(od, s.beta, s.alpha, s.min_stained_px)
    return {
        "tissue_fraction": float(tissue.mean()),
        "tissue_mean_od": _mean_od(od, tissue),
        "stained_fraction": float((od > s.beta).all(axis=2).mean()),
        "near_white_noise": near_white_noise(rgb, s.white_min, s.window_px),
        "macenko_h": stains[0].tolist() if stains else None,
        "macenko_e": stains[1].tolist() if stains else None,
        "angle_h_deg": angle_deg(stains[0], REFERENCE_H) if stains else None,
        "angle_e_deg": angle_deg(stains[1], REFERENCE_E) if stains else None,
    }


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def sample_figures(root: Path, index: int, s: Settings) -> Dict[str, Any]:
    """Nuclei per class, tissue shares (None without a tissue mask) and image figures of a sample."""
    files = ds.sample_files(index)
    sample = json.loads((root / files["metadata"]).read_text())["sample"]
    mpp = float(sample["mpp_um"])
    with open(root / files["cells_csv"], newline="") as f:
        cells = list(csv.DictReader(f))
    classes: Dict[str, Dict[str, Any]] = {}
    for c in cells:
        k = classes.setdefault(c["class_name"], {"count": 0, "visible": 0, "areas_um2": []})
        k["count"] += 1
        area = int(c["visible_area_px"])
        if area > 0:
            k["visible"] += 1
            k["areas_um2"].append(area * mpp ** 2)

    rgb = read_rgb(root / files["image"])
    od = optical_density(rgb, s.i0)
    instance = tifffile.imread(root / files["instance"])
    in_focus = [int(c["id"]) for c in cells if abs(float(c["depth_to_focus_um"])) <= s.focus_um]
    figures = image_figures(rgb, s)
    figures["nucleus_mean_od"] = _mean_od(od, instance > 0)
    figures["in_focus_nucleus_mean_od"] = _mean_od(od, np.isin(instance, in_focus))

    tissue = None
    if (root / tissue_mask_file(index)).exists():
        codes = tifffile.imread(root / tissue_mask_file(index))
        names = sample.get("tissue_classes", DEFAULT_TISSUE_CLASSES)
        counts = np.bincount(codes.ravel(), minlength=len(names))
        tissue = {names.get(str(code), f"code {code}"): float(n / codes.size)
                  for code, n in enumerate(counts)}
    return {"index": index, "field_um2": (int(sample["image_size_px"]) * mpp) ** 2,
            "classes": classes, "tissue": tissue, "image": figures}


def _spread(values: Sequence[Any]) -> Optional[Dict[str, Any]]:
    """Mean, min and max over samples (componentwise for vectors), ignoring samples without a value."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, float)
    pick = (lambda x: x.tolist()) if a.ndim > 1 else float
    return {"mean": pick(a.mean(axis=0)), "min": pick(a.min(axis=0)), "max": pick(a.max(axis=0)),
            "n": len(values)}


def dataset_stats(root: Path, indices: Sequence[int], s: Settings = Settings()) -> Dict[str, Any]:
    """Figures of the given samples of a dataset: pooled per-class counts, shares and median areas;
    per-sample densities, tissue shares and image figures as mean and range over samples."""
    samples = [sample_figures(root, i, s) for i in indices]
    names = sorted({n for x in samples for n in x["classes"]})
    total = sum(k["count"] for x in samples for k in x["classes"].values())
    nuclei = {}
    for n in names:
        per = [x["classes"].get(n, {"count": 0, "visible": 0, "areas_um2": []}) for x in samples]
        areas = [a for k in per for a in k["areas_um2"]]
        count = sum(k["count"] for k in per)
        nuclei[n] = {
            "count": count, "visible": sum(k["visible"] for k in per), "share": count / total,
            "density_per_10k_um2": _spread([k["count"] / x["field_um2"] * DENSITY_AREA_UM2
                                            for k, x in zip(per, samples)]),
            "median_area_um2": float(np.median(areas)) if areas else None,
        }
    masked = [x["tissue"] for x in samples if x["tissue"] is not None]
    tissue_names = list(dict.fromkeys(n for t in masked for n in t))
    return {
        "root": str(root), "samples": [x["index"] for x in samples], "settings": asdict(s),
        "field_um2": sum(x["field_um2"] for x in samples), "nuclei": nuclei,
        "tissue_masks": len(masked),
        "tissue": {n: _spread([t.get(n, 0.0) for t in masked]) for n in tissue_names} if masked else None,
        "image": {k: _spread([x["image"][k] for x in samples]) for k in samples[0]["image"]}
        if samples else {},
    }


def _central_box(height: int, width: int, crop_px: int) -> Tuple[int, int, int, int]:
    h, w = min(height, crop_px), min(width, crop_px)
    return (height - h) // 2, (width - w) // 2, h, w


def _read_tiff_box(tif: tifffile.TiffFile, page: tifffile.TiffPage,
                   box: Tuple[int, int, int, int]) -> np.ndarray:
    """A box of a TIFF page, decoding only the tiles it touches, so that a whole-slide base level
    (gigapixels) is never decoded whole; striped or planar pages are small enough to read whole."""
    y0, x0, h, w = box
    if not page.is_tiled or page.planarconfig != tifffile.PLANARCONFIG.CONTIG:
        return page.asarray()[y0:y0 + h, x0:x0 + w]
    th, tw = page.tilelength, page.tilewidth
    across = -(-page.imagewidth // tw)
    out = np.zeros((h, w, page.samplesperpixel), page.dtype)
    for ty in range(y0 // th, (y0 + h - 1) // th + 1):
        for tx in range(x0 // tw, (x0 + w - 1) // tw + 1):
            index = ty * across + tx
            tif.filehandle.seek(page.dataoffsets[index])
            data = tif.filehandle.read(page.databytecounts[index])
            tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
            if tile is None:  # an empty tile: tifffile's fill value, 0
                continue
            ys, xs = ty * th, tx * tw
            a0, a1, b0, b1 = max(y0, ys), min(y0 + h, ys + th), max(x0, xs), min(x0 + w, xs + tw)
            out[a0 - y0:a1 - y0, b0 - x0:b1 - x0] = tile[0, a0 - ys:a1 - ys, b0 - xs:b1 - xs]
    return out


def read_reference(path: Path, level: int, crop_px: int) -> Tuple[np.ndarray, Dict[str, Any]]:
    """RGB uint8 of the central ``crop_px`` square (at most) of a real image, and where it came
    from. TIFF and SVS are read with tifffile at pyramid ``level`` (0 = base), other formats with
    Pillow."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            if not 0 <= level < len(levels):
                raise ValueError(f"{path} has pyramid levels 0..{len(levels) - 1}, not {level}")
            page = levels[level].keyframe
            shape = (page.imagelength, page.imagewidth)
            box = _central_box(*shape, crop_px)
            rgb = _read_tiff_box(tif, page, box)
    else:
        full = read_rgb(path)
        shape = full.shape[:2]
        box = _central_box(*shape, crop_px)
        rgb = full[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: need 8-bit RGB, got {rgb.dtype} of shape {rgb.shape}")
    return rgb[..., :3], {"path": str(path), "level": level, "level_shape": list(shape),
                          "crop_yxhw": list(box)}


def reference_stats(path: Path, level: int, crop_px: int, s: Settings = Settings()) -> Dict[str, Any]:
    rgb, where = read_reference(path, level, crop_px)
    return {**where, "image": image_figures(rgb, s)}


# ------------------------------------------------------------------------------------------ report

IMAGE_ROWS = (  # (figure, label) in the order of the text report
    ("tissue_fraction", "tissue fraction (OD sum > {tissue_od})"),
    ("tissue_mean_od", "tissue mean OD"),
    ("stained_fraction", "stained fraction (OD > {beta} in R, G, B)"),
    ("nucleus_mean_od", "nucleus mean OD"),
    ("in_focus_nucleus_mean_od", "in-focus nucleus mean OD (|d| <= {focus_um} um)"),
    ("near_white_noise", "near-white local SD, grey levels"),
    ("macenko_h", "Macenko H"),
    ("macenko_e", "Macenko E"),
    ("angle_h_deg", "angle H to reference, deg"),
    ("angle_e_deg", "angle E to reference, deg"),
)


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def _cell(spread: Optional[Dict[str, Any]], component: Optional[int] = None) -> str:
    if spread is None:
        return "-"
    m, lo, hi = (spread[k] if component is None else spread[k][component] for k in ("mean", "min", "max"))
    return f"{_num(m)} [{_num(lo)}, {_num(hi)}]"


def report_stats(st: Dict[str, Any], references: Sequence[Dict[str, Any]] = ()) -> str:
    """The realism report as text: nuclei, tissue compartments, then the image figures of the
    dataset (mean [min, max] over samples) beside each reference image's."""
    n = len(st["samples"])
    lines = [f"realism of {n} complete sample(s), field {st['field_um2']:.0f} um^2 in all"]
    if st["nuclei"]:
        lines.append(f"{'nuclei':<7}{'count':>7}{'visible':>9}{'share':>7}  "
                     f"{'per 10,000 um^2 mean [min, max]':<34}median visible area um^2")
        for name, k in st["nuclei"].items():
            area = "-" if k["median_area_um2"] is None else f"{k['median_area_um2']:.1f}"
            lines.append(f"{name:<7}{k['count']:>7}{k['visible']:>9}{k['share']:>7.3f}  "
                         f"{_cell(k['density_per_10k_um2']):<34}{area}")
    if st["tissue"] is None:
        lines.append("tissue compartments: no masks/tissue/<i>.tif in these samples, skipped")
    else:
        lines.append(f"tissue compartments, share of field mean [min, max] over the {st['tissue_masks']} "
                     f"of {n} samples with masks/tissue:")
        lines += [f"  {name:<12}{_cell(v)}" for name, v in st["tissue"].items()]
    heads = ["dataset mean [min, max]"] + [Path(r["path"]).name for r in references]
    width = max(26, *(len(h) + 2 for h in heads))
    lines.append(f"{'image figures':<48}" + "".join(f"{h:<{width}}" for h in heads))
    for key, label in IMAGE_ROWS:
        label = label.format(**st["settings"])
        spread = st["image"].get(key)
        if key in VECTOR_FIGURES:
            for c, channel in enumerate("RGB"):
                refs = [r["image"].get(key) for r in references]
                lines.append(f"{label + ' ' + channel:<48}{_cell(spread, c):<{width}}"
                             + "".join(f"{'-' if v is None else _num(v[c]):<{width}}" for v in refs))
        else:
            lines.append(f"{label:<48}{_cell(spread):<{width}}"
                         + "".join(f"{_num(r['image'].get(key)):<{width}}" for r in references))
    for r in references:
        y0, x0, h, w = r["crop_yxhw"]
        lines.append(f"reference {r['path']}: level {r['level']} of {r['level_shape'][0]} x "
                     f"{r['level_shape'][1]} px, central {h} x {w} px crop at ({y0}, {x0})")
    lines.append("reference stain vectors (Macenko 2009): H " + " ".join(map(str, REFERENCE_H))
                 + ", E " + " ".join(map(str, REFERENCE_E)))
    return "\n".join(line.rstrip() for line in lines)
