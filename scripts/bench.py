"""Benchmark: scene-model build time and scaling, tissue composition, per-stage render seconds.

Usage::

    python scripts/bench.py                 # everything below
    python scripts/bench.py --scene-only    # no Blender
    python scripts/bench.py --noise         # render stages with noise=levels (5 label-noise levels)

Reports medians over seeds; the machines are shared, so compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from arctique.appearance import compartment_maps, texture_grid
from arctique.compose import load_config
from arctique.io.dataset import Dataset
from arctique.labels.quality import in_focus_hematoxylin_dice
from arctique.pipeline import StageTimer, generate
from arctique.scene import CLASS_IDS, build_scene, load, save
from arctique.scene.model import COMPARTMENT_NAMES


def scene_timing(size: int, seeds: range) -> float:
    cfg = load_config([f"optics.image_size={size}"])
    times = []
    for seed in seeds:
        start = time.perf_counter()
        build_scene(cfg, seed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def saved_scene_timing(seeds: range) -> None:
    """What a rendering-only variation saves: loading scenes/<i>.npz instead of building the scene."""
    cfg = load_config([])
    build, read = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            start = time.perf_counter()
            scene = build_scene(cfg, seed)
            build.append(time.perf_counter() - start)
            path = Path(tmp) / f"{seed}.npz"
            save(scene, path)
            start = time.perf_counter()
            load(path)
            read.append(time.perf_counter() - start)
    print(f"scene model 512 x 512: build {statistics.median(build):.2f} s, load saved {statistics.median(read):.3f} s")


def composition(seeds: range) -> None:
    """Share of the field per compartment at the slab centre, and section kinds, over seeds."""
    cfg = load_config(["optics.image_size=256", "optics.mpp=0.5"])
    shares = {name: [] for name in COMPARTMENT_NAMES}
    counts = {name: [] for name in CLASS_IDS}
    tilts = []
    for seed in seeds:
        scene = build_scene(cfg, seed)
        xs = texture_grid(scene, 1.0)
        inner = np.abs(xs) <= scene.section.field_um / 2
        codes = compartment_maps(scene, xs[inner], np.zeros(1))[0]
        for i, name in enumerate(COMPARTMENT_NAMES):
            shares[name].append(np.mean(codes == i))
        for name, cid in CLASS_IDS.items():
            counts[name].append(int(np.sum(scene.cells.cls == cid)))
        tilts.append(scene.section.tilt_deg)
    print(f"\ncomposition of the field over seeds {seeds.start}..{seeds.stop - 1} (mean share):")
    for name, v in shares.items():
        print(f"  {name:11s} {np.mean(v):6.3f}")
    print("cells per scene (mean):", ", ".join(f"{k} {np.mean(v):.0f}" for k, v in counts.items()))
    cross = sum(t < 30 for t in tilts)
    longitudinal = sum(t > 60 for t in tilts)
    print(f"sections: {cross} cross-sectional (tilt < 30 deg), {longitudinal} longitudinal (tilt > 60 deg), "
          f"{len(tilts) - cross - longitudinal} oblique")


def render_stages(seeds: range, overrides: list) -> None:
    from PIL import Image

    cfg = load_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Dataset(Path(tmp))
        rows, dice = [], []
        for seed in seeds:
            timer = StageTimer()
            labels = generate(cfg, seed, dataset, {}, timer)
            rows.append(timer.seconds)
            image = np.asarray(Image.open(Path(tmp) / f"images/image_{seed}.png"))
            dice.append(in_focus_hematoxylin_dice(image, labels.instance, labels.cells))
    print("hematoxylin (Otsu) vs in-focus nuclei, Dice per seed:", ", ".join(f"{d:.3f}" for d in dice))
    print(f"\nper-stage seconds, default 512 x 512 sample {' '.join(overrides)} (median over seeds):")
    total = 0.0
    for stage in rows[0]:
        value = statistics.median(r[stage] for r in rows)
        total += value
        print(f"  {stage:14s} {value:7.2f}")
    print(f"  {'total':14s} {total:7.2f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-only", action="store_true", help="skip the Blender stages")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per measurement")
    parser.add_argument("--noise", action="store_true", help="render with noise=levels")
    args = parser.parse_args()
    seeds = range(args.seeds)
    t512 = scene_timing(512, seeds)
    t1024 = scene_timing(1024, seeds)
    print(f"scene model, 512 x 512 @ 0.25 um/px: {t512:.2f} s (median of {len(seeds)} seeds)")
    print(f"scene model, 1024 x 1024 @ 0.25 um/px: {t1024:.2f} s = {t1024 / t512:.2f} x for 4 x the area")
    saved_scene_timing(seeds)
    composition(range(20))
    if not args.scene_only:
        render_stages(range(min(args.seeds, 3)), ["noise=levels"] if args.noise else [])


if __name__ == "__main__":
    main()
