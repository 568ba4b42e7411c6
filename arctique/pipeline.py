"""One sample from seed to files: scene model -> appearance -> Blender -> labels -> dataset."""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import shutil
import socket
from contextlib import nullcontext
from pathlib import Path
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import tifffile

from . import __version__
from .appearance import (Compartments, appearance_mixture, cell_stains, crypt_compartments, matrix_patterns,
                         section_compartments, tissue_textures)
from .classes import class_table
from .config import ArctiqueConf, ConfigError, NoiseConf, OpticsConf, fingerprint, to_dict
from .io import dataset as ds
from .io.sample import RenderedSample, write_sample
from .labels.ambiguity import AmbiguityMaps, ambiguity_maps, cell_columns, instance_rows
from .labels.exact import Labels, finalize, label_passes, slice_depths, tissue_classes
from .labels.noise import annotator_agreement, cell_footprints, foreground, noisy_labels, three_class
from .scene import SceneModel, load
from .scene.model import Crypts, Rips, Section
from .scene.build import add_stroma, build_tissue, scene_rows
from .labels.trace import Mesh, crossings, z_range
from .parallel import Background
from .scanner import scan
from .scene.cells import Shells, body_mesh, join_shells, nucleus_mesh, nucleus_shells
from .stopping import StopOnSignal
from .timing import StageTimer

if TYPE_CHECKING:  # bpy is imported only where something is rendered
    from .render.worker import RenderDevice, Renderer, RenderWorker

logger = logging.getLogger(__name__)

COLOUR_PIPELINE = ("Cycles linear transmittance of a white back-light (optics.white_level), Standard view "
                   "transform; the scanner (sample.scanner): point-spread function, residual defocus, white "
                   "balance, sensor noise; the sRGB transfer function (IEC 61966-2-1), uint8; JPEG")


def software_versions(blender: str) -> Dict[str, str]:
    """The versions that made a sample; ``blender`` is the version of the bpy that rendered it."""
    return {"arctique": __version__, "bpy": blender, "numpy": np.__version__, "python": platform.python_version()}


def _sample_values(cfg: ArctiqueConf, scene, focus_z: float, device: "RenderDevice") -> Dict[str, Any]:
    s = scene.section
    return {
        "render_backend": device.backend, "render_device": device.name,
        "seed": scene.seed, "mpp_um": cfg.optics.mpp, "image_size_px": cfg.optics.image_size,
        "field_um": s.field_um, "slab_um": [s.z0, s.z1], "thickness_um": s.thickness,
        "section_depth_um": s.depth, "section_tilt_deg": s.tilt_deg, "section_azimuth_deg": s.azimuth_deg,
        "focus_z_um": focus_z, "z_slices_um": [round(float(z), 6) for z in
                                                slice_depths(s.z0, s.z1, cfg.output.z_slices)],
        "crack_excess": float(scene.rips.crack_excess) if np.isfinite(scene.rips.crack_excess) else None,
        "n_goblets": int(np.sum(~scene.mucin.stem)),
        "n_red_blood_cells": int(len(scene.blood.centre)), "colour_pipeline": COLOUR_PIPELINE,
        "class_table": class_table(), "tissue_classes": tissue_classes(),
        "tissue_mask_z_um": (s.z0 + s.z1) / 2,
    }


def generate(cfg: ArctiqueConf, seed: int, dataset: ds.Dataset, parameters: Dict[str, Any],
             timer: Optional[StageTimer] = None, scene: Optional[SceneModel] = None,
             renderer: Optional["Renderer | RenderWorker"] = None) -> Labels:
    """Render sample ``seed`` and commit it to ``dataset``; ``parameters`` is the resolved config.

    ``scene`` is a saved scene of this seed and config to re-render instead of building it again;
    ``renderer`` is the job's (``render.worker``), by default Blender in this process.
    """
    from .render.worker import Renderer

    renderer = renderer or Renderer()
    timer = timer or StageTimer()
    size, mpp, threads = cfg.optics.image_size, cfg.optics.mpp, cfg.optics.threads
    # Work that needs only part of the scene starts in other processes as soon as that part exists:
    # the matrix patterns at once (beside the scene), the compartments that the crypts and tears
    # decide once they exist (beside the epithelium), the nuclei of the tissue once it is built
    # (beside the stroma placement), the labels once the cells are (beside the texture and the
    # render), Blender's build of the cells beside the texture.
    work: Dict[str, Background] = {}  # the sample's children, by what they make

    def crypts_decide(section: Section, crypts: Crypts, rips: Rips) -> None:
        work["compartments"] = Background(f"crypt compartments of sample {seed}", threads, crypt_compartments,
                                          section, crypts, rips, mpp, cfg.optics.layers)

    @cache
    def compartments() -> Compartments:
        return section_compartments(tissue, size, mpp, cfg.optics.layers, work["compartments"].result())

    try:
        with timer("scene_model"):
            work["patterns"] = Background(f"matrix patterns of sample {seed}", threads, matrix_patterns, cfg, seed)
            if scene is None:
                tissue, scene, shells = scene_and_shells(cfg, seed, threads, crypts_decide)
            else:
                crypts_decide(scene.section, scene.crypts, scene.rips)
                tissue, shells = scene, None
            nuclei = nucleus_mesh(scene.cells, cfg.cells.mesh_subdivisions, shells)
            bodies = body_mesh(scene.cells, cfg.cells.mesh_subdivisions)
        # At the job's priority: behind Blender's render the labels would hold their memory into its peak.
        work["labels"] = Background(f"labels of sample {seed}", threads, sample_labels, cfg, scene, nuclei, bodies,
                                    niceness=0)
        stains = cell_stains(cfg, scene)
        staged = dataset.staging(seed)
        blend = staged / f"scenes/{seed}.blend" if cfg.output.save_blend else None
        if blend is not None:
            blend.parent.mkdir(parents=True, exist_ok=True)
        renderer.build(cfg, scene, stains, nuclei, bodies, blend)
        with timer("appearance"):
            textures = tissue_textures(cfg, scene, work["patterns"].result, compartments)
        with timer("render_wait" if renderer.beside else "render"):
            rendered = renderer.render(textures)
        with timer("labels_wait"):
            labels, ambiguity, seconds = work["labels"].result()
        tissue_codes = compartments().mask
    finally:
        for child in work.values():
            child.cancel()
    (timer.beside if renderer.beside else timer.seconds).update(rendered.seconds)
    timer.beside.update(seconds)
    device = rendered.device
    focus_z = (scene.section.z0 + scene.section.z1) / 2 + cfg.optics.focus_offset_um
    with timer("scanner"):
        image, scanned = scan(rendered.image, cfg.scanner, cfg.optics, seed)
    meta = {"sample": {**_sample_values(cfg, scene, focus_z, device), "ambiguity": ambiguity.record,
                       "scanner": scanned},
            "software": software_versions(rendered.blender), "cells": labels.cells}
    with timer("write"):
        write_sample(staged, RenderedSample(seed, cfg.optics.mpp, image, labels, tissue_codes, scene, meta,
                                            {**parameters, "seed": seed}, ambiguity.maps()),
                     cfg.output.preview)
    with timer("label_noise"):
        write_targets(staged, seed, labels.instance, labels.semantic, labels.stack, cfg.noise, cfg.optics.mpp)
    with timer("write"):
        dataset.commit(seed, staged, {
            "index": seed, "seed": seed, "n_instances": len(labels.cells),
            "seconds": round(sum(timer.seconds.values()), 2), "host": socket.gethostname(),
            "render_backend": device.backend, "render_device": device.name,
            "software": json.dumps(software_versions(rendered.blender), sort_keys=True),
        })
    return labels


def scene_and_shells(cfg: ArctiqueConf, seed: int, threads: int,
                      beside: Callable[[Section, Crypts, Rips], None]) -> Tuple[SceneModel, SceneModel, Shells]:
    """The tissue (``build_tissue``, with ``beside``), the scene and the shells of its nuclei: those of
    the tissue's cells are made in another process while the stroma cells are placed."""
    level = cfg.cells.mesh_subdivisions
    tissue = build_tissue(cfg, seed, threads, beside)
    tissue_nuclei = Background(f"tissue nuclei of sample {seed}", threads, nucleus_shells, tissue.cells, level)
    try:
        scene = add_stroma(cfg, tissue)
        placed = scene_rows(tissue, scene)
        stroma = np.setdiff1d(np.arange(len(scene.cells)), placed)
        shells = join_shells([(placed[rows], verts) for rows, verts in tissue_nuclei.result()],
                             nucleus_shells(scene.cells.take(stroma), level, stroma))
    finally:
        tissue_nuclei.cancel()
    return tissue, scene, shells


def sample_labels(cfg: ArctiqueConf, scene: SceneModel, nuclei: Mesh, bodies: Mesh
                  ) -> Tuple[Labels, AmbiguityMaps, Dict[str, float]]:
    """The cell labels of one sample: the pixel-centre rays through the meshes Blender renders give
    the instance, cytoplasm and stack labels and the ambiguity maps (the tissue mask comes with the
    texture's compartments, ``appearance.section_compartments``). Also returns the seconds of the
    ``labels`` and ``ambiguity`` stages."""
    timer = StageTimer(scene.seed)
    with timer("labels"):
        sec, size, mpp = scene.section, cfg.optics.image_size, cfg.optics.mpp
        focus_z = (sec.z0 + sec.z1) / 2 + cfg.optics.focus_offset_um
        centre = crossings(nuclei, size, mpp, 1, (-np.inf, sec.z1))
        raw = label_passes(scene, centre, crossings(bodies, size, mpp, 1, (-np.inf, sec.z1)), cfg.output.z_slices)
        labels = finalize(scene, raw, mpp, focus_z, z_range(nuclei, len(scene.cells)))
    with timer("ambiguity"):  # exact ambiguity maps and the per-cell blur and class mixture
        rows = instance_rows(labels.cells)
        ambiguity = ambiguity_maps(scene, nuclei, centre, labels.instance, rows, mpp,
                                   cfg.output.soft_subsamples, focus_z)
        labels = replace(labels, cells=cell_columns(labels.cells, appearance_mixture(cfg, scene.cells.cls), rows,
                                                    cfg.optics.aperture, cfg.optics.mpp, labels.instance,
                                                    ambiguity.defocus, (sec.z0 - focus_z, sec.z1 - focus_z)))
    return labels, ambiguity, timer.seconds


def write_targets(folder: Path, index: int, instance: np.ndarray, semantic: np.ndarray, stack: np.ndarray,
                  noise: NoiseConf, mpp: float) -> None:
    """Clean derived targets (foreground, 3-class) and every label-noise level of one sample."""
    files = ds.sample_files(index)
    ds.write_label_tiff(folder / files["foreground"], foreground(instance), mpp)
    ds.write_label_tiff(folder / files["three_class"], three_class(instance, noise.border_px), mpp)
    footprints = cell_footprints(instance, stack) if noise.levels else None
    for level in noise.levels:
        # the single-annotator variant, then the simulated annotators and their agreement
        variants = [noisy_labels(instance, semantic, stack, index, level, noise, footprints, k)
                    for k in [None, *range(noise.annotators)]]
        for variant in variants:
            out = ds.noise_files(index, ds.level_name(level), variant.record["annotator"])
            for key in ("semantic", "instance", "three_class", "foreground"):
                ds.write_label_tiff(folder / out[key], getattr(variant, key), mpp)
            ds.write_text(folder / out["record"], ds.to_json({"seed": index, "noise": to_dict(noise),
                                                               **variant.record}))
        if noise.annotators:
            out = ds.agreement_files(index, ds.level_name(level))
            for key, array in annotator_agreement(variants[1:]).items():
                ds.write_label_tiff(folder / out[key], array, mpp)


@dataclass(frozen=True)
class SampleJob:
    """One sample to make: its seed, typed config and resolved parameters. A variation that keeps the
    geometry names the saved scene to re-render; one that changes only label noise names the
    dataset whose image and clean labels it reuses."""

    seed: int
    cfg: ArctiqueConf
    parameters: Dict[str, Any]
    scene_file: Optional[Path] = None
    rendered_in: Optional[Path] = None


def relabel(job: SampleJob, dataset: ds.Dataset, timer: StageTimer) -> None:
    """Copy a sample's image and clean labels from ``job.rendered_in`` and derive its targets and
    label-noise variants under the job's ``noise`` config; nothing is rendered."""
    seed, source = job.seed, job.rendered_in
    staged = dataset.staging(seed)
    files = ds.sample_files(seed)
    derived = {"foreground", "three_class", "parameters"}
    with timer("copy"):
        copied = [files[k] for k in files if k not in derived and (source / files[k]).exists()]
        copied += [str(p.relative_to(source)) for p in (source / ds.slice_dir(seed)).glob("*.tif")]
        for rel in copied:
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, staged / rel)
    with timer("label_noise"):
        instance = tifffile.imread(staged / files["instance"])
        semantic = tifffile.imread(staged / files["semantic"])
        stack = np.load(staged / files["stack"])
        write_targets(staged, seed, instance, semantic, stack, job.cfg.noise, job.cfg.optics.mpp)
    ds.write_text(staged / files["parameters"], ds.to_json(job.parameters))
    row = next(r for r in ds.Dataset(source).manifest() if int(r["index"]) == seed)
    dataset.commit(seed, staged, {**row, "seconds": round(sum(timer.seconds.values()), 2),
                                  "host": socket.gethostname()})


@dataclass
class Counts:
    rendered: int = 0
    skipped: int = 0
    failed: List[int] = field(default_factory=list)


class DiskFull(RuntimeError):
    """A write found no room (full file system or quota, or a file size limit): the job stopped at
    once, keeping every complete sample, since every later sample would fail the same way."""


def _recorded_fingerprint(dataset: ds.Dataset, row: Dict[str, str]) -> str:
    """A complete sample's config fingerprint: its manifest entry, or for rows written before the
    manifest had one, the fingerprint of its saved parameters."""
    if row.get("fingerprint"):
        return row["fingerprint"]
    path = dataset.root / ds.sample_files(int(row["index"]))["parameters"]
    return fingerprint(json.loads(path.read_text())) if path.exists() else ""


@dataclass(frozen=True)
class Options:
    """How the command that renders names its output folder and its redo option in messages."""

    root: str = "output.root"
    overwrite: str = "output.overwrite=true"


VARY_OPTIONS = Options(root="--into", overwrite="--overwrite")


def check_same_config(dataset: ds.Dataset, jobs: Sequence[SampleJob], overwrite: bool,
                      options: Options = Options()) -> None:
    """Refuse a job whose config differs from the one that made samples already complete in the
    dataset: skipping them would mix two configs in one dataset (``overwrite`` redoes them).

    Raises:
        ConfigError: naming the samples and the way out, in the command's ``options``.
    """
    if overwrite:
        return
    rows = {int(r["index"]): r for r in dataset.manifest()}
    of_config: Dict[int, str] = {}  # the jobs of arctique-gen share one config object

    def job_fingerprint(job: SampleJob) -> str:
        if id(job.cfg) not in of_config:
            of_config[id(job.cfg)] = fingerprint(to_dict(job.cfg))
        return of_config[id(job.cfg)]

    other = [job.seed for job in jobs
             if job.seed in rows and _recorded_fingerprint(dataset, rows[job.seed]) != job_fingerprint(job)]
    if other:
        raise ConfigError(
            f"{options.root}={str(dataset.root)!r} holds samples {ds.compact(other)} made with another configuration "
            f"(scene, appearance, label noise or written layers differ): choose another {options.root}, or give "
            f"{options.overwrite} to redo them")


def check_output_root(root: Path) -> None:
    """The dataset folder can be made and written: it is not a file, under a file, a link to nothing
    or read-only, and what it holds has the dataset's kinds (the manifest a file, the layout's
    top folders folders).

    Raises:
        ConfigError: naming ``output.root`` and the path that is in the way.
    """
    where = f"output.root={str(root)!r}"
    existing = root.absolute()
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{where} cannot be a dataset folder: {existing} is a link to {os.readlink(existing)}, "
                              "which does not exist; create it or choose another output.root")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{where} cannot be a dataset folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} cannot be written: {existing} is read-only")
    if (root / ds.MANIFEST).is_dir():
        raise ConfigError(f"{where} cannot be a dataset folder: its {ds.MANIFEST} is a folder; move it away or "
                          "choose another output.root")
    for name in ds.layout_folders():
        if (root / name).exists() and not (root / name).is_dir():
            raise ConfigError(f"{where} cannot be a dataset folder: {root / name} is a file where the dataset keeps "
                              f"its folder {name}/; move it away or choose another output.root")


def check_device(renderer: "Renderer | RenderWorker", optics: OpticsConf) -> None:
    """A GPU asked for exists (Cycles is asked, before the first scene is built; its output goes to
    a temporary log, so a failed check writes nothing into the dataset).

    Raises:
        ConfigError: naming ``optics.device``.
    """
    if optics.device == "cpu":
        return
    try:
        renderer.check_device(optics)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None


def check_memory(cfg: ArctiqueConf, available: Optional[int] = None) -> None:
    """The estimated peak memory of one sample fits in the memory available now.

    Raises:
        ConfigError: naming the keys that drive the estimate.
    """
    need = estimated_memory_bytes(cfg)
    available = available if available is not None else available_memory_bytes()
    if available is not None and need > available:
        o = cfg.optics
        raise ConfigError(
            f"optics.image_size={o.image_size}, optics.mpp={o.mpp}, output.z_slices={cfg.output.z_slices}, "
            f"output.soft_subsamples={cfg.output.soft_subsamples} and noise.annotators={cfg.noise.annotators} "
            f"need about {need / 2**30:.1f} GiB per sample, but {available / 2**30:.1f} GiB of memory is available")


# Peak resident memory of one sample: the job's processes together (``parallel.TreeMemory``), from
# measured renders at 0.5 um/px, 10 slices, 4 x 4 sub-pixel rays unless said (128 px 0.44 GB,
# 16 x 16 rays 0.71 GB; 256 px 0.60 GB, 8 x 8 rays 0.85 GB, 16 x 16 rays 1.72 GB, 40 slices 0.65 GB;
# 192 px with 20 slices 0.53 GB; 512 px at 0.25 um/px 0.78-0.84 GB, at 1 um/px 1.9 GB: the same sample
# peaks up to a quarter higher when the machine is busy, as the threads' memory pools grow), rounded
# up. The terms: Blender and the libraries; the render buffers, image and masks per pixel; the label
# stack per pixel and slice (int64 and its TIFF copies); the crossings of the sub-pixel rays of the
# partial-volume maps per ray (ray index, depth and mesh row of about two crossings per ray: 69-79 B
# measured, growing with output.soft_subsamples squared); the maps of one noise level's variants,
# held together for the annotators' agreement, per pixel and variant (a uint16 and three uint8 maps,
# and their stacked copy); the cell meshes and tissue texture per um^3 of section.
MEMORY_BASE_BYTES = 640 * 2**20
MEMORY_PER_PIXEL_BYTES = 200
MEMORY_PER_SLICE_PIXEL_BYTES = 24
MEMORY_PER_SOFT_RAY_BYTES = 80
MEMORY_PER_VARIANT_PIXEL_BYTES = 16
MEMORY_PER_UM3_BYTES = 1500


def estimated_memory_bytes(cfg: ArctiqueConf) -> int:
    """Peak memory of one sample (bytes), from the constants above:
    base + pixels x (per pixel + per slice x z_slices + per ray x soft_subsamples^2
    + per variant x (annotators + 1) when there are noise levels) + per um^3 x section volume."""
    o, out = cfg.optics, cfg.output
    pixels = o.image_size ** 2
    field_um3 = (o.image_size * o.mpp + 2 * cfg.tissue.margin_um) ** 2 * max(cfg.tissue.section.thickness_um)
    variants = cfg.noise.annotators + 1 if cfg.noise.levels else 0
    per_pixel = (MEMORY_PER_PIXEL_BYTES + MEMORY_PER_SLICE_PIXEL_BYTES * out.z_slices
                 + MEMORY_PER_SOFT_RAY_BYTES * out.soft_subsamples ** 2 + MEMORY_PER_VARIANT_PIXEL_BYTES * variants)
    return int(MEMORY_BASE_BYTES + pixels * per_pixel + field_um3 * MEMORY_PER_UM3_BYTES)


def available_memory_bytes() -> Optional[int]:
    """``MemAvailable`` of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _disk_full(dataset: ds.Dataset, exc: OSError, seed: Optional[int], remaining: int) -> DiskFull:
    """The one-line report of a write that found no room: where, how much is free, and how much
    space the rest of the job needs."""
    written = Path(exc.filename or dataset.root).absolute()
    root = dataset.root.absolute()
    where = root if written.is_relative_to(root) else written
    while not where.exists():  # a staging or temporary folder is gone by now
        where = where.parent
    during = f"while writing sample {seed}" if seed is not None else "before the first sample"
    if exc.errno == errno.EFBIG:
        return DiskFull(f"a file outgrew the file size limit at {where} {during} ({exc.strerror}): job stopped, "
                        "complete samples kept; raise the limit (ulimit -f unlimited) and run the same command "
                        "again: it resumes")
    sizes = [sum(p.stat().st_size for p in dataset.sample_paths(i)) for i in sorted(dataset.completed())[-3:]]
    need = f"about {ds.size_text(remaining * max(sizes))} for the {remaining} samples left" if sizes \
        else "room for at least one sample"
    return DiskFull(f"disk full at {where} ({ds.size_text(shutil.disk_usage(where).free)} free) {during}: job "
                    f"stopped, complete samples kept; free {need} and run the same command again: it resumes")


def render_samples(dataset: ds.Dataset, jobs: Sequence[SampleJob], overwrite: bool, progress: bool,
                   options: Options = Options()) -> Counts:
    """Render every job not yet complete in ``dataset``. A sample that fails is recorded in
    ``failures/<i>.json`` (error, traceback, host) and the next one goes on.

    Before the first scene the output folder, the device, memory and the config of samples already
    complete are checked (ConfigError), then the job's seeds are recorded in ``jobs/``. SIGINT and
    SIGTERM stop the job at once (``arctique.stopping``); a full disk stops it with DiskFull.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .render.worker import start_renderer

    if not jobs:
        return Counts()
    first = jobs[0].cfg
    check_output_root(dataset.root)
    check_memory(first)
    check_same_config(dataset, jobs, overwrite, options)
    dataset.replaces_others, dataset.redo_option = overwrite, options.overwrite
    done = dataset.completed()
    renders = any(job.rendered_in is None and (overwrite or job.seed not in done) for job in jobs)
    renderer = start_renderer(first.optics) if renders else None  # Blender starts while the first scene is built
    try:
        if renderer is not None:
            check_device(renderer, first.optics)
        dataset.fingerprint = fingerprint(to_dict(first))
        try:
            dataset.record_job([job.seed for job in jobs])
        except OSError as exc:
            if exc.errno in ds.NO_SPACE:
                raise _disk_full(dataset, exc, None, _left(jobs, done, overwrite)) from None
            raise
        # With a bar, log lines go through tqdm, which clears the bar and draws it again below them.
        with StopOnSignal(dataset) as stopper, logging_redirect_tqdm() if progress else nullcontext():
            if renderer is not None:
                stopper.on_stop.append(renderer.stop)
            return _render_jobs(dataset, jobs, done, overwrite, progress and tqdm, stopper, renderer)
    finally:
        if renderer is not None:
            renderer.close()


def _left(jobs: Sequence[SampleJob], done: Set[int], overwrite: bool) -> int:
    """How many of ``jobs`` are still to be made."""
    return sum(overwrite or job.seed not in done for job in jobs)


def _render_jobs(dataset: ds.Dataset, jobs: Sequence[SampleJob], done: Set[int], overwrite: bool, progress,
                 stopper: StopOnSignal, renderer: Optional["Renderer | RenderWorker"]) -> Counts:
    """The loop of ``render_samples`` over its jobs; ``progress`` is tqdm, or None."""
    counts = Counts()
    for n, job in enumerate(progress(jobs, desc="samples", unit="sample") if progress else jobs):
        seed = job.seed
        if seed in done and not overwrite:
            logger.info("sample %d is complete in %s: skipped (%s redoes it)", seed, dataset.root,
                        dataset.redo_option)
            counts.skipped += 1
            continue
        logger.info("sample %d (%d of %d): started", seed, n + 1, len(jobs))
        stopper.current = seed
        dataset.fingerprint = fingerprint(to_dict(job.cfg))
        timer = StageTimer(seed)
        try:
            if seed in done:
                dataset.forget(seed)
            if job.rendered_in is not None:
                relabel(job, dataset, timer)
            else:
                scene = load(job.scene_file) if job.scene_file else None
                generate(job.cfg, seed, dataset, job.parameters, timer, scene, renderer)
        except Exception as exc:  # recorded per sample; the job goes on with the next seed
            dataset.discard_staging(seed)
            try:
                if isinstance(exc, OSError) and exc.errno in ds.NO_SPACE:
                    raise exc
                dataset.record_failure(seed, exc)
            except OSError as unwritten:  # the sample's files, or its failure record, found no room
                if unwritten.errno in ds.NO_SPACE:
                    raise _disk_full(dataset, unwritten, seed, _left(jobs[n:], done, overwrite)) from None
                raise
            logger.error("sample %d failed (%s: %s); recorded in %s", seed, type(exc).__name__, exc,
                         dataset.root / ds.failure_file(seed))
            counts.failed.append(seed)
            continue
        finally:
            stopper.current = None
        dataset.clear_failure(seed)
        logger.info("sample %d written to %s (%s)", seed, dataset.root, timer.summary())
        counts.rendered += 1
    return counts


def job_seeds(cfg: ArctiqueConf) -> range:
    """The seeds of this job: ``seed .. seed + n_samples - 1``, or its shard of them."""
    first, end = cfg.seed, cfg.seed + cfg.n_samples
    if cfg.shard.size:
        first += cfg.shard.index * cfg.shard.size
        end = min(end, first + cfg.shard.size)
    return range(first, end)


def run(cfg: ArctiqueConf, parameters: Dict[str, Any], progress: bool = True) -> Counts:
    """Render this job's seeds into ``output.root``, skipping complete ones."""
    dataset = ds.Dataset(Path(cfg.output.root))
    jobs = [SampleJob(seed, cfg, parameters) for seed in job_seeds(cfg)]
    return render_samples(dataset, jobs, cfg.output.overwrite, progress)
