"""Derived training targets and label-noise variants of one sample's clean labels (numpy/scipy).

A noise level L (percent) scales every probability of the ``noise`` config by L / 100 (capped at 1),
as in the reference's recipes: at level 100 the defaults flip every class, merge every touching
pair and give each cell a 1-in-4 chance of each foreground distortion. Every part draws from its
own stream ``labels/noise/<L>/<part>`` of the sample seed, and draws for every instance whether or
not the change is applied, so that changing one probability never reshuffles the others.
Simulated annotator k of a level draws in the same way from ``labels/noise/<L>/annotator/<k>/<part>``,
so annotators are independent of each other, of the single-annotator variant and of their number.

One variant is one coherent annotation: the cells' outline noise (drop-out, dilation or erosion,
shift, elastic warp) moves them in the instance map itself, the false merges and splits act on
that map, and the semantic, 3-class and foreground maps are all derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..config import NoiseConf
from ..rng import stream
from ..classes import CLASS_IDS, CLASS_NAMES
from ..io.dataset import level_name
from .exact import label_dtype


def foreground(instance: np.ndarray) -> np.ndarray:
    return (instance > 0).astype(np.uint8)


def three_class(instance: np.ndarray, border_px: int) -> np.ndarray:
    """0 background, 1 interior, 2 border: the outermost ``border_px`` pixels of each instance.

    A nucleus pixel is interior when every pixel of its (2w+1)^2 neighbourhood has its label, so
    touching instances are always separated by border pixels, and the border never leaves the
    nuclei: the 3-class map is the foreground map, split.
    """
    lab = instance.astype(np.int64)
    size = 2 * border_px + 1
    interior = (lab > 0) & (ndimage.minimum_filter(lab, size, mode="nearest")
                            == ndimage.maximum_filter(lab, size, mode="nearest"))
    out = np.zeros(instance.shape, np.uint8)
    out[lab > 0] = 2
    out[interior] = 1
    return out


def touching_pairs(instance: np.ndarray) -> np.ndarray:
    """(P, 2) sorted id pairs of instances that share an edge (4-neighbourhood)."""
    pairs = []
    for a, b in ((instance[:, :-1], instance[:, 1:]), (instance[:-1, :], instance[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], 1))
    both = np.concatenate(pairs).astype(np.int64)
    return np.unique(both, axis=0) if len(both) else np.zeros((0, 2), np.int64)


@dataclass(frozen=True)
class NoisyLabels:
    level: float
    semantic: np.ndarray  # (H, W) uint8: noisy class of each clean instance
    instance: np.ndarray  # (H, W) the moved cells after false merges and splits
    three_class: np.ndarray  # (H, W) uint8 3-class map of the noisy instances
    foreground: np.ndarray  # (H, W) uint8 the noisy instances' pixels
    record: Dict[str, Any]  # what was changed, per instance, and the realised rates


def _probability(base: float, level: float) -> float:
    return float(min(1.0, base * level / 100.0))


def _flip_classes(classes: np.ndarray, ids: np.ndarray, p: float, confusion: Dict[str, Dict[str, float]],
                  rng: np.random.Generator) -> Tuple[np.ndarray, List[Dict[str, Any]], int]:
    """Per-instance class flips; the target class follows the confusion row of the true class or,
    without one, is uniform over the other classes present in the image."""
    noisy = classes.copy()
    u = rng.random(len(ids))
    pick = rng.random(len(ids))
    present = sorted({int(classes[i]) for i in ids})
    flips, flippable = [], 0
    for k, i in enumerate(ids):
        true = int(classes[i])
        row = confusion.get(CLASS_NAMES[true])
        if row:
            targets = [CLASS_IDS[name] for name in row]
            weights = np.array(list(row.values()), float)
        else:
            targets = [c for c in present if c != true]
            weights = np.ones(len(targets))
        if not targets or weights.sum() <= 0:
            continue
        flippable += 1
        if u[k] < p:
            cdf = np.cumsum(weights) / weights.sum()
            noisy[i] = targets[min(int(np.searchsorted(cdf, pick[k], side="right")), len(targets) - 1)]
            flips.append({"id": int(i), "class": CLASS_NAMES[true], "noisy_class": CLASS_NAMES[int(noisy[i])]})
    return noisy, flips, flippable


def _merge(instance: np.ndarray, fraction: float, rng: np.random.Generator
           ) -> Tuple[np.ndarray, List[List[int]], int]:
    """False merges: a share ``fraction`` of the touching pairs joined; merged ids take the smallest id."""
    pairs = touching_pairs(instance)
    order = rng.permutation(len(pairs))
    chosen = pairs[np.sort(order[: int(round(fraction * len(pairs)))])]
    parent = np.arange(int(instance.max(initial=0)) + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in chosen:
        ra, rb = root(int(a)), root(int(b))
        parent[max(ra, rb)] = min(ra, rb)
    lut = np.array([root(i) for i in range(len(parent))])
    return lut[instance], chosen.tolist(), len(pairs)


def _split(instance: np.ndarray, ids: np.ndarray, fraction: float, rng: np.random.Generator, next_id: int
           ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """False splits: a chosen instance is cut by a random line through its centroid; one side gets a
    new id, from ``next_id`` on (above every clean id)."""
    u = rng.random(len(ids))
    angle = rng.uniform(0, np.pi, len(ids))
    out = instance.astype(np.int64)
    splits = []
    boxes = ndimage.find_objects(out)
    for k, i in enumerate(ids):
        if u[k] >= fraction or i > len(boxes) or boxes[i - 1] is None:
            continue
        box = boxes[i - 1]
        mask = out[box] == i
        yy, xx = np.nonzero(mask)
        if len(yy) < 8:
            continue
        side = (yy - yy.mean()) * np.cos(angle[k]) - (xx - xx.mean()) * np.sin(angle[k]) > 0
        if side.all() or not side.any():
            continue
        crop = out[box]
        crop[yy[side], xx[side]] = next_id
        splits.append({"id": int(i), "new_id": next_id, "angle_deg": round(float(np.degrees(angle[k])), 3)})
        next_id += 1
    return out, splits


def _elastic(mask: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Simard et al. (2003) elastic warp of a binary mask: smoothed random displacements times alpha."""
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, mask.shape), sigma) * alpha
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, mask.shape), sigma) * alpha
    yy, xx = np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), indexing="ij")
    warped = ndimage.map_coordinates(mask.astype(float), [yy + dy, xx + dx], order=1, mode="constant")
    return warped > 0.5


def _move_cells(instance: np.ndarray, footprints: Dict[int, Tuple[Tuple[slice, slice], np.ndarray]],
                level: float, cfg: NoiseConf, streams
                ) -> Tuple[np.ndarray, List[Dict[str, Any]], Dict[str, Optional[float]]]:
    """The instance map after each cell's own drop-out, dilation/erosion, shift and elastic warp.

    A changed cell leaves its pixels; then, in id order, its distorted footprint (visible or
    occluded parts) takes the pixels that are background by now: an annotator's outline covers
    the nuclei it does not cross, never another nucleus. Nuclei hidden in every pixel are drawn
    for (the streams stay aligned) but never drawn in: no annotator sees them. Unchanged cells
    keep their pixels, so level 0 gives the clean map. Returns the map, a record per cell and the
    realised share of cells drawn for each distortion.
    """
    shape = instance.shape
    fg = cfg.foreground
    ids = np.array(sorted(footprints), np.int64)
    n = len(ids)
    drop_rng, scale_rng, shift_rng, elastic_rng = (streams(f"foreground/{p}")
                                                   for p in ("dropout", "scale", "shift", "elastic"))
    drop = drop_rng.random(n) < _probability(fg.dropout_prob, level)
    scale_on = scale_rng.random(n) < _probability(fg.scale_prob, level)
    scale_k = scale_rng.integers(1, max(fg.scale_px, 1) + 1, n) * np.where(scale_rng.random(n) < 0.5, -1, 1)
    shift_on = shift_rng.random(n) < _probability(fg.shift_prob, level)
    shift = shift_rng.integers(-fg.shift_px, fg.shift_px + 1, (n, 2))
    elastic_on = elastic_rng.random(n) < _probability(fg.elastic_prob, level)
    alpha = elastic_rng.uniform(*fg.elastic_alpha_px, n)
    sigma = elastic_rng.uniform(*fg.elastic_sigma_px, n)
    warp_seeds = elastic_rng.integers(0, 2**63, n)

    pad = fg.shift_px + fg.scale_px + int(np.ceil(fg.elastic_alpha_px[1])) + 2
    changed = drop | scale_on | shift_on | elastic_on
    seen = np.isin(ids, instance)
    out = instance.astype(np.int64)
    out[np.isin(out, ids[changed])] = 0
    records = []
    for k, i in enumerate(ids):
        box, mask = footprints[int(i)]
        rec: Dict[str, Any] = {"id": int(i), "dropout": bool(drop[k]), "scale_px": None, "shift_px": None,
                               "elastic": None}
        records.append(rec)
        if drop[k] or not changed[k] or not seen[k]:
            continue
        m = np.pad(mask, pad)
        if scale_on[k]:
            op = ndimage.binary_dilation if scale_k[k] > 0 else ndimage.binary_erosion
            m = op(m, iterations=int(abs(scale_k[k])))
            rec["scale_px"] = int(scale_k[k])
        if shift_on[k]:
            m = np.roll(m, (int(shift[k, 0]), int(shift[k, 1])), axis=(0, 1))
            rec["shift_px"] = [int(shift[k, 0]), int(shift[k, 1])]
        if elastic_on[k]:
            m = _elastic(m, alpha[k], sigma[k], np.random.default_rng(int(warp_seeds[k])))
            rec["elastic"] = {"alpha_px": round(float(alpha[k]), 4), "sigma_px": round(float(sigma[k]), 4)}
        y0, x0 = box[0].start - pad, box[1].start - pad
        ys, xs = np.nonzero(m)
        ys, xs = ys + y0, xs + x0
        keep = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        ys, xs = ys[keep], xs[keep]
        free = out[ys, xs] == 0
        out[ys[free], xs[free]] = i
    realised = {f"foreground_{op}": round(float(on.mean()), 6) if n else None
                for op, on in (("dropout", drop), ("scale", scale_on), ("shift", shift_on), ("elastic", elastic_on))}
    return out, records, realised


def cell_footprints(instance: np.ndarray, stack: np.ndarray) -> Dict[int, Tuple[Tuple[slice, slice], np.ndarray]]:
    """Full 2D footprint of every instance, occluded parts included: its visible pixels or any slice."""
    ids = np.unique(np.concatenate([np.unique(instance), np.unique(stack)]))
    ids = ids[ids > 0]
    both = np.concatenate([instance[None], stack]).astype(np.int64)
    boxes = ndimage.find_objects(both)
    out = {}
    for i in ids:
        box = boxes[int(i) - 1][1:]
        out[int(i)] = (box, (both[(slice(None),) + box] == i).any(0))
    return out


def noisy_labels(instance: np.ndarray, semantic: np.ndarray, stack: np.ndarray, seed: int, level: float,
                 cfg: NoiseConf, footprints: Optional[Dict] = None, annotator: Optional[int] = None) -> NoisyLabels:
    """The noise variant ``level`` of one sample's clean labels (see the module docstring); with
    ``annotator`` k, simulated annotator k of that level, drawn from ``labels/noise/<L>/annotator/<k>/*``."""
    prefix = f"labels/noise/{level_name(level)}" + ("" if annotator is None else f"/annotator/{annotator}")

    def streams(part: str) -> np.random.Generator:
        return stream(seed, f"{prefix}/{part}")

    n = int(instance.max(initial=0))
    ids = np.unique(instance)
    ids = ids[ids > 0]
    classes = np.zeros(n + 1, np.uint8)
    classes[instance.ravel()] = semantic.ravel()
    p_flip = _probability(cfg.semantic.flip_prob, level)
    noisy_classes, flips, flippable = _flip_classes(classes, ids, p_flip, cfg.semantic.confusion,
                                                    streams("semantic"))
    if footprints is None:
        footprints = cell_footprints(instance, stack)
    moved, fg_records, fg_realised = _move_cells(instance, footprints, level, cfg, streams)
    p_merge = _probability(cfg.instance.merge_fraction, level)
    merged, merges, n_pairs = _merge(moved, p_merge, streams("merge"))
    p_split = _probability(cfg.instance.split_prob, level)
    merged_ids = np.unique(merged[merged > 0])
    split, splits = _split(merged, merged_ids, p_split, streams("split"), n + 1)
    noisy_instance = split.astype(label_dtype(int(split.max(initial=0))))

    def rate(k: int, of: int) -> Optional[float]:
        return round(k / of, 6) if of else None

    record = {
        "level": level,
        "annotator": annotator,
        "probabilities": {
            "semantic_flip": p_flip, "merge_fraction": p_merge, "split": p_split,
            **{f"foreground_{op}": _probability(getattr(cfg.foreground, f"{op}_prob"), level)
               for op in ("dropout", "scale", "shift", "elastic")},
        },
        "realised": {
            "semantic_flip": rate(len(flips), flippable), "merge_fraction": rate(len(merges), n_pairs),
            "split": rate(len(splits), len(merged_ids)),
            **fg_realised,
        },
        "touching_pairs": n_pairs,
        "semantic_flips": flips,
        "merges": merges,
        "splits": splits,
        "foreground": fg_records,
    }
    return NoisyLabels(level=level, semantic=noisy_classes[moved], instance=noisy_instance,
                       three_class=three_class(noisy_instance, cfg.border_px),
                       foreground=foreground(noisy_instance), record=record)


def annotator_agreement(annotators: List[NoisyLabels]) -> Dict[str, np.ndarray]:
    """Per-pixel agreement of one level's simulated annotators, float32 (H, W):
    ``semantic_agreement``, the share of annotators giving the pixel its most frequent class
    (background included), and ``foreground_votes``, the share marking it as nucleus."""
    classes = np.stack([a.semantic for a in annotators])
    counts = np.stack([(classes == c).sum(0) for c in range(int(classes.max(initial=0)) + 1)])
    return {"semantic_agreement": (counts.max(0) / len(annotators)).astype(np.float32),
            "foreground_votes": np.mean([a.foreground for a in annotators], 0).astype(np.float32)}
