"""Benchmark: scene-model build time and scaling, tissue composition, per-stage render seconds.

Usage::

    python scripts/bench.py                 # everything below
    python scripts/bench.py --scene-only    # no Blender
    python scripts/bench.py --composition   # only the tissue and nuclei composition (no Blender)
    python scripts/bench.py --noise         # render stages with noise=levels (5 label-noise levels)
    python scripts/bench.py --noise --annotators 3  # ... and 3 simulated annotators per level
    python scripts/bench.py --process [--against DIR]  # whole arctique-gen processes (default, 20x);
                                            # DIR: another checkout, timed in turn in the same run
    python scripts/bench.py --long 50       # resident memory over 50 samples in one process
    python scripts/bench.py --convergence   # image RMSE of the default against a converged render
    python scripts/bench.py --convergence optics=20x  # ... of the 20x preset (default: 256 x 256 px)

Reports medians over seeds; the machines are shared, so compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from arctique.classes import CLASS_IDS
from arctique.compose import load_config
from arctique.io.dataset import Dataset
from arctique.labels.exact import tissue_mask
from arctique.labels.quality import in_focus_hematoxylin_dice
from arctique.parallel import TreeMemory, lean_threads, tree_pss_bytes
from arctique.pipeline import StageTimer, generate
from arctique.render.worker import start_renderer
from arctique.scene import build_scene, load, save
from arctique.scene.cells import nucleus_mesh
from arctique.scene.model import COMPARTMENT_NAMES, EPITHELIUM, LUMEN, MUCIN


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


def _mean_range(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():6.3f} [{v.min():.3f}, {v.max():.3f}]" if len(v) else "  none"


def composition(seeds: range) -> None:
    """Tissue and nuclei of default samples over seeds, numpy only: the share of the field of each
    compartment of the tissue mask (``labels.exact.tissue_mask``, slab mid-plane), the goblet mucin
    in the epithelium of cross-cut crypts, and the nuclei of the section per class."""
    cfg = load_config([])
    field = cfg.optics.image_size * cfg.optics.mpp
    size, mpp = cfg.optics.image_size // 2, cfg.optics.mpp * 2  # the default field at half resolution
    per_10k = 1e4 / field**2
    shares = {name: [] for name in COMPARTMENT_NAMES}
    crypts, goblet, tilts = [], [], []
    density = {name: [] for name in CLASS_IDS}
    for seed in seeds:
        scene = build_scene(cfg, seed)
        s = scene.section
        mask = tissue_mask(scene, size, mpp)
        share = np.bincount(mask.ravel(), minlength=len(COMPARTMENT_NAMES)) / mask.size
        for code, name in enumerate(COMPARTMENT_NAMES):
            shares[name].append(share[code])
        crypts.append(share[EPITHELIUM] + share[MUCIN] + share[LUMEN])
        if s.tilt_deg < 30 and share[EPITHELIUM] + share[MUCIN] > 0:
            goblet.append(share[MUCIN] / (share[EPITHELIUM] + share[MUCIN]))
        # Nuclei in the section: the mesh (as rendered) meets the slab and the centre is in the field.
        in_field = np.nonzero((np.abs(scene.cells.centre[:, :2]) <= field / 2).all(1))[0]
        cells = scene.cells.take(in_field)
        verts, faces, rows = nucleus_mesh(cells, cfg.cells.mesh_subdivisions)
        z = verts[faces, 2]
        low, high = np.full(len(cells), np.inf), np.full(len(cells), -np.inf)
        np.minimum.at(low, rows, z.min(1))
        np.maximum.at(high, rows, z.max(1))
        seen = (high >= s.z0) & (low <= s.z1)
        for name, cid in CLASS_IDS.items():
            density[name].append(np.sum(seen & (cells.cls == cid)) * per_10k)
        tilts.append(s.tilt_deg)
    print(f"\ncomposition over seeds {seeds.start}..{seeds.stop - 1}, default config ({field:g} um field; "
          f"tissue mask at the slab mid-plane, {mpp:g} um/px), share of the field, mean [min, max]:")
    for name, v in shares.items():
        print(f"  {name:11s} {_mean_range(v)}")
    print(f"  {'crypts':11s} {_mean_range(crypts)}   (epithelium + mucin + lumen)")
    print(f"goblet mucin / epithelial area (epithelium + mucin), crypts cut at tilt < 30 deg "
          f"({len(goblet)} seeds): {_mean_range(goblet)}")
    total = np.sum([density[n] for n in density], axis=0)
    print("nuclei in the section (mesh meets the slab, centre in the field) per 10,000 um^2, "
          "mean [min, max], and share of all:")
    for name, v in density.items():
        print(f"  {name:11s} {_mean_range(v)}   share {np.sum(v) / max(total.sum(), 1e-12):.3f}")
    print(f"  {'all':11s} {_mean_range(total)}")
    cross = sum(t < 30 for t in tilts)
    longitudinal = sum(t > 60 for t in tilts)
    print(f"sections: {cross} cross-sectional (tilt < 30 deg), {longitudinal} longitudinal (tilt > 60 deg), "
          f"{len(tilts) - cross - longitudinal} oblique")


def _samples(cfg, seeds, dataset: Dataset):
    """(seed, timer, labels) of each seed rendered as ``arctique-gen`` renders a job: with the job's
    renderer (Blender in a worker process where the job may use two or more cores)."""
    renderer = start_renderer(cfg.optics)
    try:
        for seed in seeds:
            timer = StageTimer()
            yield seed, timer, generate(cfg, seed, dataset, {}, timer, renderer=renderer)
    finally:
        renderer.close()


def render_stages(seeds: range, overrides: list) -> None:
    from PIL import Image

    cfg = load_config(overrides)
    before = tree_pss_bytes()
    with tempfile.TemporaryDirectory() as tmp, TreeMemory() as memory:
        dataset = Dataset(Path(tmp))
        rows, beside, dice = [], [], []
        for seed, timer, labels in _samples(cfg, seeds, dataset):
            rows.append(timer.seconds)
            beside.append(timer.beside)
            image = np.asarray(Image.open(Path(tmp) / f"images/image_{seed}.png"))
            dice.append(in_focus_hematoxylin_dice(image, labels.instance, labels.cells))
    print("hematoxylin (Otsu) vs in-focus nuclei, Dice per seed:", ", ".join(f"{d:.3f}" for d in dice))
    print(f"\nper-stage seconds, default 512 x 512 sample {' '.join(overrides)} (median over seeds):")
    total = 0.0
    for stage in rows[0]:
        value = statistics.median(r[stage] for r in rows)
        total += value
        print(f"  {stage:14s} {value:7.2f}")
    print(f"  {'total':14s} {total:7.2f}  (start-up and exit not included)")
    print("in other processes, beside those stages (arctique.parallel, render.worker):")
    for stage in beside[0]:
        print(f"  {stage:14s} {statistics.median(r[stage] for r in beside):7.2f}")
    print(f"peak memory of the job's processes together (PSS): {memory.peak_bytes / 2**20:.0f} MB, of which "
          f"{before / 2**20:.0f} MB this process held before (for a whole fresh job: --process)")


# A fresh interpreter running arctique-gen that reports the peak memory of its processes at exit
# (arctique.parallel.TreeMemory; a checkout from before it had one process: its own high-water mark).
CHILD = ("import atexit, resource, sys\n"
         "try:\n    from arctique.parallel import TreeMemory\n    memory = TreeMemory(interval=0.25).__enter__()\n"
         "    peak = lambda: memory.peak_bytes // 1024\n"
         "except ImportError:\n    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
         "atexit.register(lambda: sys.stderr.write(f'peak_kb={peak()}\\n'))\n"
         "try:\n    from arctique.commands.gen import console\n"
         "except ImportError:  # a checkout from before arctique/commands/: arctique/cli.py\n"
         "    from arctique import cli\n    console = getattr(cli, 'console', cli.main)\n"
         "console()  # as the arctique-gen command ends\n")


def _process(checkout: Path | None, overrides: list, root: Path) -> tuple:
    """Wall seconds and peak MB of one ``arctique-gen`` process (the package of ``checkout``, or the
    installed one)."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    start = time.perf_counter()
    root.mkdir(parents=True)
    # Run in the empty output folder: ``python -c`` puts the working directory first on sys.path.
    done = subprocess.run([sys.executable, "-c", CHILD, *overrides, f"output.root={root}"], env=env,
                          capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"arctique-gen {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("peak_kb=")][-1]
    return wall, int(peak.split("=")[1]) / 1024


def process_timing(against: Path | None, repeats: int = 3) -> None:
    """Whole ``arctique-gen seed=7`` processes (start-up, scene, render, every label, writing), the
    default and the 20x preset, median of ``repeats`` fresh processes; with ``against``, that
    checkout's processes alternate with these, so both see the same machine load."""
    checkouts = {"this checkout": None, **({f"{against}": against} if against else {})}
    for preset in (["seed=7"], ["seed=7", "optics=20x"]):
        runs = {name: [] for name in checkouts}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(repeats):
                for k, (name, checkout) in enumerate(checkouts.items()):
                    runs[name].append(_process(checkout, preset, Path(tmp) / f"{k}_{r}"))
        for name, values in runs.items():
            wall = statistics.median(v[0] for v in values)
            print(f"arctique-gen {' '.join(preset)} ({name}): {wall:.1f} s wall (median of {repeats}, "
                  f"{', '.join(f'{v[0]:.1f}' for v in values)}), peak {max(v[1] for v in values):.0f} MB")


def long_run(n: int) -> None:
    """Memory of the job's processes (this one, its Blender worker, and any forked helper still
    running) after each of ``n`` default samples rendered as one job: it must not grow with the
    number of samples rendered."""
    cfg = load_config([])
    resident = []
    with tempfile.TemporaryDirectory() as tmp, TreeMemory() as memory:
        for _ in _samples(cfg, range(n), Dataset(Path(tmp))):
            resident.append(tree_pss_bytes() / 2**20)
    quarter = max(n // 4, 1)
    print(f"memory of the job's processes (PSS) over {n} samples: after sample 1 {resident[0]:.0f} MB, "
          f"median of the first {quarter} {statistics.median(resident[:quarter]):.0f} MB, of the last {quarter} "
          f"{statistics.median(resident[-quarter:]):.0f} MB, highest after a sample {max(resident):.0f} MB; "
          f"peak while rendering {memory.peak_bytes / 2**20:.0f} MB")


def convergence(overrides: list, seed: int = 7) -> None:
    """Grey-level RMSE (sRGB PNG) of the image of ``overrides`` against a converged render of the
    same scene (256 samples, four times finer volume steps, no denoising, and every tissue sheet
    traced by Cycles rather than multiplied in: ``render.film``), and of fewer and more samples."""
    from PIL import Image

    from arctique.render.blender import SceneRenderer

    def image(more: list) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            generate(load_config([*overrides, *more]), seed, Dataset(Path(tmp)), {})
            return np.asarray(Image.open(Path(tmp) / f"images/image_{seed}.png"), float)

    default = load_config(overrides).optics
    SceneRenderer.composite_focal_sheets = False
    try:
        truth = image(["optics.samples=256", f"optics.volume_step_rate={default.volume_step_rate / 4}",
                       "optics.denoise=false"])
    finally:
        SceneRenderer.composite_focal_sheets = True
    print(f"image RMSE (grey levels) against a converged render, seed {seed}, {' '.join(overrides)}:")
    for samples in sorted({default.samples // 2, default.samples - 2, default.samples - 1, default.samples,
                           default.samples * 2}):
        start = time.perf_counter()
        rendered = image([f"optics.samples={samples}"])
        rmse = np.sqrt(np.mean((rendered - truth) ** 2))
        print(f"  {samples:3d} samples{' (default)' if samples == default.samples else ''}: {rmse:.2f} "
              f"({time.perf_counter() - start:.1f} s sample)")


def main() -> None:
    lean_threads()  # as arctique-gen does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene-only", action="store_true", help="skip the Blender stages")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per measurement")
    parser.add_argument("--noise", action="store_true", help="render with noise=levels")
    parser.add_argument("--annotators", type=int, default=0, help="with --noise: simulated annotators per level")
    parser.add_argument("--composition", action="store_true",
                        help="only the composition of seeds 0-19 (tissue mask, nuclei; no Blender)")
    parser.add_argument("--process", action="store_true", help="whole arctique-gen processes only")
    parser.add_argument("--against", type=Path, help="with --process: another checkout to time in turn")
    parser.add_argument("--long", type=int, default=0, help="only the resident memory over this many samples")
    parser.add_argument("--convergence", nargs="*", metavar="OVERRIDE",
                        help="only the image RMSE against a converged render (of optics.image_size=256, "
                             "or of the overrides given)")
    args = parser.parse_args()
    if args.process:
        process_timing(args.against)
        return
    if args.long:
        long_run(args.long)
        return
    if args.convergence is not None:
        convergence(args.convergence or ["optics.image_size=256"])
        return
    if args.composition:
        composition(range(20))
        return
    seeds = range(args.seeds)
    t512 = scene_timing(512, seeds)
    t1024 = scene_timing(1024, seeds)
    print(f"scene model, 512 x 512 @ 0.25 um/px: {t512:.2f} s (median of {len(seeds)} seeds)")
    print(f"scene model, 1024 x 1024 @ 0.25 um/px: {t1024:.2f} s = {t1024 / t512:.2f} x for 4 x the area")
    saved_scene_timing(seeds)
    composition(range(20))
    if not args.scene_only:
        noise = ["noise=levels", f"noise.annotators={args.annotators}"] if args.noise else []
        render_stages(range(min(args.seeds, 3)), noise)


if __name__ == "__main__":
    main()
