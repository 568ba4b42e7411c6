"""How far a dataset is from real H&E: a classifier two-sample test at matched physical scale.

``arctique-summary DATASET --realism REAL [REAL ...]`` resamples the dataset's images and the real
images to the coarser of their pixel sizes (area-preserving), draws crops of one physical size with
a seed, describes every crop by colour, texture and structure features, and asks a random forest
to tell ours from real with grouped cross-validation (the crops of one image are never in both
folds). The same test of each real source (patient, slide, lab) against the other real sources is
the floor: what stain and patient differences alone make recognisable. A synthetic set is as
realistic as this test can tell when ours scores no higher than the real sources do.

Needs the ``realism`` extra (scikit-image, scikit-learn).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tifffile
from PIL import Image, ImageDraw

from . import rng
from .io import dataset as ds
from .stats import TIFF_SUFFIXES, optical_density, read_reference, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp") + TIFF_SUFFIXES
OURS = "ours"
REAL_REGION_PX = 4096  # side of the central square read from each real image
OD_I0 = 256.0  # the features' OD: -log10((I + 1) / 256), zero for white whatever a scan's glass level


class RealismError(ValueError):
    """Bad real input: a missing folder, an unreadable image, a missing pixel size, too small an image."""


@dataclass(frozen=True)
class RealismSettings:
    crop_px: int = 128  # crop side at the common pixel size
    crops_per_image: int = 8  # random crops drawn from each (resampled) image
    seed: int = 0  # crop positions, forest and folds
    folds: int = 5  # grouped cross-validation folds (fewer when there are fewer images)
    trees: int = 200  # random forest size
    near_white: int = 220  # min(R, G, B) above this: near-white pixel
    pure_white: int = 245  # min(R, G, B) above this: pure-white pixel
    nucleus_min_um2: float = 8.0  # detected hematoxylin blobs smaller than this are not nuclei
    resamples: int = 1000  # bootstrap resamples of the images behind the interval of ours vs real
    matched_draws: int = 10  # draws of our images at the image count of a real source (when we have more)


@dataclass
class Field:
    """One image as the test sees it: RGB at the common pixel size, its source and name."""

    rgb: np.ndarray
    source: str
    name: str


# ------------------------------------------------------------------------------------------ input

def pixel_size_of(path: Path) -> Optional[float]:
    """um per pixel recorded in a TIFF or SVS (Aperio ``MPP =`` in the description, else the
    resolution tags in cm or inch); None for other formats or where nothing is recorded."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        found = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
        if found:
            return float(found.group(1))
        tag, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if tag is None or unit is None or unit.value not in (2, 3):
            return None
        num, den = tag.value
        per_unit_um = 25400.0 if unit.value == 2 else 10000.0
        return per_unit_um * den / num if num else None


def real_files(paths: Sequence[Path], pattern: Optional[str]) -> List[Tuple[Path, str]]:
    """(image, source) pairs. A folder with image sub-folders gives one source per sub-folder; a
    folder of images or a file is one source named after the folder it is in. ``pattern``, a regular
    expression searched in the file name, names the source by its first group instead."""
    found: List[Tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise RealismError(f"--realism {path}: no such file or folder")
        if path.is_file():
            found.append((path, path.parent.name or str(path.parent)))
            continue
        subs = sorted(p for p in path.iterdir() if p.is_dir() and _images_in(p))
        for folder in subs or [path]:
            found += [(f, folder.name) for f in _images_in(folder)]
    if not found:
        raise RealismError(f"--realism {' '.join(map(str, paths))}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    if pattern:
        regex = re.compile(pattern)
        named = []
        for f, _ in found:
            m = regex.search(f.name)
            if not m or not m.groups():
                raise RealismError(f"--real-source-pattern {pattern!r} gives no group in {f.name}")
            named.append((f, m.group(1)))
        found = named
    return found


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 of an image; of a TIFF/SVS its base level's central ``REAL_REGION_PX`` square, so
    that a whole slide is never decoded whole."""
    try:
        return read_reference(path, 0, REAL_REGION_PX)[0]
    except Exception as e:  # any decoder error is the file's fault, and is reported as such
        raise RealismError(f"cannot read {path}: {e}") from None


def resample(rgb: np.ndarray, mpp: float, target_mpp: float) -> np.ndarray:
    """``rgb`` at ``target_mpp`` (>= mpp) by Pillow's box filter: each new pixel is the area-weighted
    mean of the old pixels it covers, as a coarser sensor pixel would integrate them."""
    if abs(mpp - target_mpp) < 1e-9:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * mpp / target_mpp)), max(1, round(h * mpp / target_mpp)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))


def dataset_images(root: Path, indices: Sequence[int]) -> List[Tuple[np.ndarray, float, str]]:
    out = []
    for i in indices:
        files = ds.sample_files(i)
        mpp = float(json.loads((root / files["metadata"]).read_text())["sample"]["mpp_um"])
        out.append((read_rgb(root / files["image"]), mpp, f"seed {i}"))
    return out


def crops(images: Sequence[Field], s: RealismSettings, stream: str) -> Tuple[np.ndarray, np.ndarray]:
    """``crops_per_image`` random crops of each image (N, crop, crop, 3) and the image index of each."""
    gen = rng.stream(s.seed, stream)
    out, owner = [], []
    for k, im in enumerate(images):
        h, w = im.rgb.shape[:2]
        if h < s.crop_px or w < s.crop_px:
            raise RealismError(f"{im.name}: {w} x {h} px at the common pixel size is smaller than a "
                               f"{s.crop_px} px crop (--crop-px)")
        for y, x in zip(gen.integers(0, h - s.crop_px + 1, s.crops_per_image),
                        gen.integers(0, w - s.crop_px + 1, s.crops_per_image)):
            out.append(im.rgb[y:y + s.crop_px, x:x + s.crop_px])
            owner.append(k)
    return np.stack(out), np.asarray(owner)


# --------------------------------------------------------------------------------------- features

def crop_features(rgb: np.ndarray, mpp: float, s: RealismSettings) -> Dict[str, float]:
    """Colour, texture and structure of one crop; every name says what it measures."""
    from scipy import ndimage
    from skimage import color, feature, filters, measure

    grey = color.rgb2gray(rgb) * 255
    od = optical_density(rgb, OD_I0)
    hed = color.rgb2hed(rgb)
    hsv = color.rgb2hsv(rgb)
    lowest = rgb.min(axis=2)
    f: Dict[str, float] = {}
    for c, name in enumerate("RGB"):
        f[f"od_{name}_mean"] = float(od[..., c].mean())
    for c, name in ((0, "hematoxylin"), (1, "eosin")):
        f[f"{name}_mean"] = float(hed[..., c].mean())
        f[f"{name}_p90"] = float(np.percentile(hed[..., c], 90))
    f["saturation_mean"] = float(hsv[..., 1].mean())
    f["saturation_sd"] = float(hsv[..., 1].std())
    f["value_mean"] = float(hsv[..., 2].mean())
    f["near_white_share"] = float((lowest > s.near_white).mean())
    f["pure_white_share"] = float((lowest > s.pure_white).mean())

    gradient = filters.sobel(grey)
    for q in (50, 90, 99):
        f[f"gradient_p{q}"] = float(np.percentile(gradient, q))
    laplace = ndimage.laplace(grey)
    f["flat_share"] = float((np.abs(laplace) < 1).mean())
    lbp = feature.local_binary_pattern(grey.astype(np.uint8), 8, 1, "uniform")
    for b, share in enumerate(np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size):
        f[f"lbp_{b}"] = float(share)
    glcm = feature.graycomatrix((grey // 8).astype(np.uint8), [1, 3], [0, np.pi / 2], levels=32,
                                symmetric=True, normed=True)
    for prop in ("contrast", "homogeneity", "energy", "correlation"):
        values = feature.graycoprops(glcm, prop)
        for d, distance in enumerate((1, 3)):
            f[f"glcm_{prop}_d{distance}"] = float(values[d].mean())
    f.update(spectrum_features(grey))

    h = hed[..., 0]
    nuclei = h > filters.threshold_otsu(h) if np.ptp(h) > 0 else np.zeros(h.shape, bool)
    blobs = [r.area * mpp ** 2 for r in measure.regionprops(measure.label(nuclei))]
    areas = [a for a in blobs if a >= s.nucleus_min_um2]
    f["nuclei_per_1000_um2"] = len(areas) / (rgb.shape[0] * rgb.shape[1] * mpp ** 2) * 1000
    f["nucleus_area_median_um2"] = float(np.median(areas)) if areas else 0.0
    f["nucleus_share"] = sum(areas) / (rgb.shape[0] * rgb.shape[1] * mpp ** 2)
    return f


def spectrum_features(grey: np.ndarray) -> Dict[str, float]:
    """Slope of the radially averaged log power spectrum against log frequency (natural images
    about -2; sharp drawings flatter) and the share of power in the upper half of the frequencies."""
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    n = grey.shape[0]
    yy, xx = np.indices(power.shape)
    radius = np.hypot(yy - n // 2, xx - grey.shape[1] // 2).astype(int)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.maximum(np.bincount(radius.ravel()), 1)
    freq = np.arange(len(radial))
    use = (freq >= 2) & (freq <= n // 2) & (radial > 0)
    slope = np.polyfit(np.log(freq[use]), np.log(radial[use]), 1)[0] if use.sum() > 2 else 0.0
    total = power.sum()
    return {"spectrum_slope": float(slope),
            "high_frequency_share": float(power[radius > n // 4].sum() / total) if total > 0 else 0.0}


def feature_table(batch: np.ndarray, mpp: float, s: RealismSettings) -> Tuple[List[str], np.ndarray]:
    rows = [crop_features(c, mpp, s) for c in batch]
    names = list(rows[0])
    return names, np.array([[r[n] for n in names] for r in rows])


# ------------------------------------------------------------------------------------------- test

def out_of_fold(x: np.ndarray, is_a: np.ndarray, groups: np.ndarray, s: RealismSettings) -> np.ndarray:
    """Each row's prediction (set a or not) by a random forest trained without its image: grouped
    cross-validation, so that the crops of one image are never on both sides."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    folds = min(s.folds, len(np.unique(groups[is_a])), len(np.unique(groups[~is_a])))
    if folds < 2:
        raise RealismError("the two-sample test needs at least two images on each side")
    predicted = np.zeros(len(x), bool)
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=s.seed).split(x, is_a, groups):
        forest = RandomForestClassifier(s.trees, random_state=s.seed, n_jobs=1, class_weight="balanced")
        forest.fit(x[train], is_a[train])
        predicted[test] = forest.predict(x[test])
    return predicted


def balanced_accuracy(is_a: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the shares of each set told right: 0.5 when the sets cannot be told apart, 1 when always."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(is_a, predicted))


def two_sample_accuracy(x: np.ndarray, is_a: np.ndarray, groups: np.ndarray, s: RealismSettings) -> float:
    """Balanced accuracy of telling set a from set b, out of fold (``out_of_fold``)."""
    return balanced_accuracy(is_a, out_of_fold(x, is_a, groups, s))


def image_interval(is_a: np.ndarray, predicted: np.ndarray, groups: np.ndarray, s: RealismSettings,
                   level: float = 0.95) -> Tuple[float, float]:
    """Interval of the balanced accuracy over other draws of the images: the images of each side
    resampled with replacement (all crops of an image go together), the predictions kept. Two
    configurations whose intervals overlap widely are not told apart by this many images."""
    gen = rng.stream(s.seed, "realism/bootstrap")
    sides = [np.unique(groups[side]) for side in (is_a, ~is_a)]
    rows = {g: np.flatnonzero(groups == g) for side in sides for g in side}
    values = []
    for _ in range(s.resamples):
        pick = np.concatenate([rows[g] for side in sides for g in gen.choice(side, len(side))])
        values.append(balanced_accuracy(is_a[pick], predicted[pick]))
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def matched_accuracy(x_ours: np.ndarray, ours_owner: np.ndarray, x_real: np.ndarray, real_owner: np.ndarray,
                     n_images: int, s: RealismSettings) -> Dict[str, Any]:
    """Ours vs real with ``n_images`` (fewer than all) of our images, as many as a real source holds,
    over ``matched_draws`` draws of them: the floor compares one source against the others, and a
    forest given more images of one side learns that side better, so only this number compares with it."""
    n_ours = int(ours_owner.max()) + 1
    gen = rng.stream(s.seed, "realism/matched")
    values = []
    for _ in range(s.matched_draws):
        rows = np.isin(ours_owner, gen.choice(n_ours, n_images, replace=False))
        x = np.concatenate([x_ours[rows], x_real])
        groups = np.concatenate([ours_owner[rows], real_owner + n_ours])
        values.append(two_sample_accuracy(x, np.arange(len(x)) < rows.sum(), groups, s))
    return {"images": n_images, "mean": float(np.mean(values)), "draws": values}


def ranked_differences(names: Sequence[str], ours: np.ndarray, real: np.ndarray) -> List[Dict[str, Any]]:
    """Features by absolute standardised difference of means (pooled SD), largest first."""
    out = []
    for k, name in enumerate(names):
        a, b = ours[:, k], real[:, k]
        pooled = np.sqrt((a.var() + b.var()) / 2)
        diff = (a.mean() - b.mean()) / pooled if pooled > 0 else 0.0
        out.append({"name": name, "difference": round(float(diff), 3),
                    "ours": float(np.median(a)), "real": float(np.median(b))})
    return sorted(out, key=lambda r: -abs(r["difference"]))


def realism(root: Path, indices: Sequence[int], real: Sequence[Path], real_mpp: Optional[float],
            pattern: Optional[str] = None, s: RealismSettings = RealismSettings(),
            montage: Optional[Path] = None) -> Dict[str, Any]:
    """The two-sample test of the dataset's ``indices`` against the real images (see the module)."""
    if not indices:
        raise RealismError(f"{root} has no complete sample to compare")
    files = real_files(real, pattern)
    mpps = []
    for f, _ in files:
        mpp = pixel_size_of(f) or real_mpp
        if mpp is None:
            raise RealismError(f"{f}: no pixel size recorded; give --real-mpp")
        mpps.append(mpp)
    ours_raw = dataset_images(root, indices)
    common = max(max(mpps), max(m for _, m, _ in ours_raw))
    ours = [Field(resample(rgb, mpp, common), OURS, name) for rgb, mpp, name in ours_raw]
    reals = [Field(resample(read_image(f), mpp, common), src, f.name) for (f, src), mpp in zip(files, mpps)]

    ours_crops, ours_owner = crops(ours, s, "realism/crops/ours")
    real_crops, real_owner = crops(reals, s, "realism/crops/real")
    names, x_ours = feature_table(ours_crops, common, s)
    _, x_real = feature_table(real_crops, common, s)
    x = np.concatenate([x_ours, x_real])
    groups = np.concatenate([ours_owner, real_owner + len(ours)])
    is_ours = np.arange(len(x)) < len(x_ours)
    sources = np.array([reals[k].source for k in real_owner])
    predicted = out_of_fold(x, is_ours, groups, s)
    accuracy = balanced_accuracy(is_ours, predicted)
    images_per_source = {n: int(sum(im.source == n for im in reals)) for n in sorted(set(sources))}
    source_images = int(np.median(list(images_per_source.values()))) if len(images_per_source) > 1 else len(ours)
    if source_images < len(ours):
        matched = matched_accuracy(x_ours, ours_owner, x_real, real_owner, source_images, s)
    else:  # all of ours: the test already made
        matched = {"images": len(ours), "mean": accuracy, "draws": [accuracy]}
    per_source = {}
    if len(set(sources)) > 1:
        for name in sorted(set(sources)):
            per_source[name] = two_sample_accuracy(x_real, sources == name, real_owner, s)
    result = {
        "settings": {**asdict(s), "common_mpp_um": common, "crop_um": s.crop_px * common},
        "images": {"ours": len(ours), "real": len(reals),
                   "real_per_source": images_per_source},
        "crops": {"ours": len(x_ours), "real": len(x_real)},
        "c2st": {"ours": accuracy, "ours_interval": image_interval(is_ours, predicted, groups, s),
                 "ours_matched": {**matched, "source_images": source_images},
                 "sources": per_source,
                 "sources_median": float(np.median(list(per_source.values()))) if per_source else None,
                 "sources_max": max(per_source.values()) if per_source else None},
        "features": ranked_differences(names, x_ours, x_real),
    }
    if montage is not None:
        write_montage(montage, ours_crops, real_crops, s)
        result["montage"] = str(montage)
    return result


# ---------------------------------------------------------------------------------------- montage

def write_montage(path: Path, ours: np.ndarray, real: np.ndarray, s: RealismSettings,
                  per_row: int = 6, rows_each: int = 2) -> None:
    """Random crops of ours (upper block) and of the real images (lower block) at their common
    pixel size, each block under a label bar."""
    gen = rng.stream(s.seed, "realism/montage")
    n = per_row * rows_each
    gap, bar, side = 4, 18, s.crop_px
    blocks = [("ours (synthetic)", ours[gen.permutation(len(ours))[:n]]),
              ("real", real[gen.permutation(len(real))[:n]])]
    height = sum(bar + rows_each * (side + gap) for _ in blocks)
    sheet = Image.new("RGB", (per_row * (side + gap) + gap, height + gap), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for label, batch in blocks:
        draw.text((gap, y + 3), f"{label}: {s.crop_px} px crops at the common pixel size", fill="black")
        y += bar
        for k, crop in enumerate(batch):
            sheet.paste(Image.fromarray(crop), (gap + (k % per_row) * (side + gap), y + (k // per_row) * (side + gap)))
        y += rows_each * (side + gap)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def report_realism(r: Dict[str, Any], top: int = 12) -> str:
    c = r["c2st"]
    st = r["settings"]
    lines = [f"realism against real H&E: {r['images']['ours']} of ours, {r['images']['real']} real "
             f"({', '.join(f'{k} {v}' for k, v in r['images']['real_per_source'].items())}), "
             f"{st['crop_px']} px crops ({st['crop_um']:.0f} um) at {st['common_mpp_um']:.3g} um/px, "
             f"{st['crops_per_image']} per image",
             f"two-sample test, balanced accuracy (0.5: indistinguishable): ours vs real {c['ours']:.3f} "
             f"(95 % interval over resampled images {c['ours_interval'][0]:.3f}-{c['ours_interval'][1]:.3f})"]
    m = c["ours_matched"]
    if m["images"] < m["source_images"]:
        lines.append(f"  ours has {m['images']} images, a real source {m['source_images']}: a forest trained on fewer "
                     "images of ours scores lower than the floor's; render more to compare with the floor")
    else:
        lines.append(f"  ours with {m['images']} images, as many as a real source (the number to hold against the "
                     f"floor; mean of {len(m['draws'])} draws): {m['mean']:.3f}"
                     + (f" ({min(m['draws']):.3f}-{max(m['draws']):.3f})" if len(m["draws"]) > 1 else ""))
    if c["sources"]:
        lines.append("  each real source vs the other real sources (the floor): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in c["sources"].items())
                     + f"; median {c['sources_median']:.3f}, max {c['sources_max']:.3f}")
    else:
        lines.append("  one real source only: no floor (give sub-folders or --real-source-pattern)")
    lines.append(f"  {'feature (largest standardised differences)':<32}{'difference':>11}{'ours':>11}{'real':>11}")
    for f in r["features"][:top]:
        lines.append(f"  {f['name']:<32}{f['difference']:>11.2f}{f['ours']:>11.4g}{f['real']:>11.4g}")
    if "montage" in r:
        lines.append(f"montage: {r['montage']}")
    return "\n".join(lines)
