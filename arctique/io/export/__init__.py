"""Exports of a finished dataset into the layouts of the public nuclei datasets (``arctique-export``).

Every format is one module with a ``Writer`` fed the same patches (``patches.py``) of the same
reader (``io.reader``), so a new format is one new module added to ``FORMATS``. Nothing is
rendered: an export only reads the dataset's images and label maps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

from ..dataset import pid_alive
from ..reader import Dataset
from ..splits import assign_splits, parse_split
from .arctique_v3 import ArctiqueV3
from .base import Writer
from .coco import Coco
from .conic import Conic
from .hovernet import INPUT_PX as HOVERNET_INPUT_PX
from .hovernet import HoverNet
from .lizard import Lizard
from .pannuke import PanNuke
from .patches import field_patches, field_size, resampled_field, tile_starts

FORMATS: Dict[str, Type[Writer]] = {w.name: w for w in (ArctiqueV3, Lizard, Conic, PanNuke, HoverNet, Coco)}
RECORD = "export.json"


MAX_FIELD_PX = 8192  # largest exported field side, as optics.image_size allows


def export(root: Path, format_name: str, out: Path, mpp: Optional[float] = None, tile: Optional[int] = None,
           split: Optional[str] = None, split_seed: int = 0, noise: Optional[float] = None,
           annotator: Optional[int] = None, hovernet_mode: Optional[str] = None) -> Dict[str, Any]:
    """Write the complete samples of dataset ``root`` into ``out`` in format ``format_name``.

    Args:
        mpp: target pixel size in um (default: the dataset's own).
        tile: cut each field into tiles of this side (px); formats with a fixed patch size
            (CoNIC, PanNuke: 256) always tile at that size.
        split: e.g. ``train=0.8,val=0.1,test=0.1``: samples (all tiles of a field together) go to
            ``out/<split>/`` by a shuffle of seed ``split_seed``.
        noise: export the label-noise variant of this level instead of the clean labels.
        annotator: with ``noise``, that of simulated annotator k of the level.
        hovernet_mode: with the hovernet format, the model mode the patches must serve (``fast``
            or ``original``): patches smaller than its input are refused.

    Returns the export record, also written to ``out/export.json``. Every argument is checked, with
    a one-line ``ValueError`` naming the option, before anything is written. The export is written
    beside ``out`` and moved into place when whole: an interrupted or failed export leaves nothing
    at ``out``, so the same command can simply be run again.
    """
    if format_name not in FORMATS:
        raise ValueError(f"--format: '{format_name}' is not one of {', '.join(FORMATS)}")
    writer_type = FORMATS[format_name]
    if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"--mpp must be a finite number > 0 um per pixel, got {mpp:g}")
    if writer_type.patch_px is not None and tile not in (None, writer_type.patch_px):
        raise ValueError(f"--tile: {format_name} patches are {writer_type.patch_px} px, got {tile}")
    tile = tile or writer_type.patch_px
    if tile is not None and tile < 1:
        raise ValueError(f"--tile must be >= 1 px, got {tile}")
    if hovernet_mode is not None and (format_name != "hovernet" or hovernet_mode not in HOVERNET_INPUT_PX):
        raise ValueError(f"--hovernet-mode: {hovernet_mode!r} needs --format hovernet and one of "
                         f"{', '.join(HOVERNET_INPUT_PX)}")
    fractions = parse_split(split) if split else {"": 1.0}
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: {out} is not empty; choose a new folder")
    dataset = Dataset(root, noise=noise, annotator=annotator)
    if not len(dataset):
        raise ValueError(f"{root} has no complete sample to export")

    targets, tiles = {}, {}
    for sample in dataset:
        target = mpp or sample.mpp
        size = field_size(int(sample.metadata["sample"]["image_size_px"]), sample.mpp, target)
        if size > MAX_FIELD_PX:
            raise ValueError(f"--mpp {target:g}: sample {sample.index} would be {size} px per side, more than "
                             f"{MAX_FIELD_PX} (a larger --mpp)")
        if tile is not None and size < tile:
            raise ValueError(f"--tile {tile}: sample {sample.index} is {size} px at {target:g} um/px, smaller "
                             "than one tile (a larger optics.image_size or a smaller --mpp fits)")
        targets[sample.index] = target
        tiles[sample.index] = len(tile_starts(size, tile)) ** 2 if tile else 1
        if hovernet_mode is not None and (tile or size) < HOVERNET_INPUT_PX[hovernet_mode]:
            raise ValueError(f"--hovernet-mode {hovernet_mode}: sample {sample.index} gives {tile or size} px patches, "
                             f"smaller than its {HOVERNET_INPUT_PX[hovernet_mode]} px inputs (a larger --tile from a "
                             "larger field, e.g. optics.image_size=1088 exported at --mpp 0.5 --tile 540)")
        most = writer_type.max_tiles_per_field
        if most is not None and tiles[sample.index] > most:
            raise ValueError(f"--tile {tile}: sample {sample.index} would be {tiles[sample.index]} tiles, more than "
                             f"the {most} that {format_name} file names can number (a larger --tile)")
    splits = assign_splits(list(dataset.indices), fractions, split_seed)

    staging = _staging_folder(out)
    try:
        patches: List[Dict[str, Any]] = []
        vanished: Dict[str, int] = {}
        # Visible nuclei of classes the format has no code for: left out of every map (said, not silent).
        names = {c.id: c.name for c in dataset.classes}
        left_out: Counter = Counter()
        for name in fractions:
            members = [s for s in dataset if splits[s.index] == name]
            writer = writer_type(staging / name, sum(tiles[s.index] for s in members))
            for sample in members:
                try:
                    field = resampled_field(sample, sorted(writer_type.codes), targets[sample.index])
                    vanished[str(sample.index)] = field.vanished
                    left_out.update(names[row["class_id"]] for row in sample.cells
                                    if row["visible_area_px"] > 0 and row["class_id"] not in writer_type.codes)
                    for patch in field_patches(field, tile):
                        writer.add(patch)
                        patches.append({"name": patch.name, "split": name, "sample": patch.index, "y_px": patch.y,
                                        "x_px": patch.x, "size_px": patch.instance.shape[0], "mpp_um": patch.mpp,
                                        "instances": patch.n})
                except (OSError, ValueError, KeyError) as exc:  # a missing, damaged or inconsistent file
                    raise ValueError(f"sample {sample.index} of {root}: {type(exc).__name__}: {exc}") from None
            writer.close()
        record = {
            "format": format_name, "dataset": str(root), "mpp_um": mpp, "tile_px": tile,
            "noise_level": dataset.noise, "annotator": annotator, "split": split, "split_seed": split_seed,
            "hovernet_mode": hovernet_mode,
            # nuclei with no pixel left at the export's pixel size, per sample: dropped from every map
            "vanished": vanished,
            "class_codes": {c.name: writer_type.codes.get(c.id) for c in dataset.classes},
            "left_out": dict(left_out), "samples": {str(i): splits[i] for i in dataset.indices},
            "patches": patches,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _staging_folder(out: Path) -> Path:
    """A new folder beside ``out`` for this process's export, ``.<out>.partial-<pid>.<host>``; those of
    processes of this host that died are removed (another host's may belong to a live export on a
    shared file system; a name without a host is this host's).

    Raises:
        ValueError: when nothing can be written there.
    """
    prefix = f".{out.name}.partial-"
    host = socket.gethostname()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in out.parent.glob(prefix + "*"):
            pid, _, stale_host = stale.name[len(prefix):].partition(".")
            if pid.isdigit() and stale_host in ("", host) and not pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        staging = out.parent / f"{prefix}{os.getpid()}.{host}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise ValueError(f"--out: cannot write in {out.parent}: {exc.strerror or exc}") from None
    return staging
