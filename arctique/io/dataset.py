"""Dataset folder: sample file layout, atomic sample writes, the manifest and the job records.

A sample is complete only when its manifest row exists. Its files are first written into a
staging folder, then renamed into place (replacing every file an earlier render of the sample
left), and the manifest row is appended last, under a file lock, so that a killed run never leaves
a sample that looks complete and concurrent jobs can share one dataset folder. Each row records the
fingerprint of the config that made the sample; each job records the seeds it was started for.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import resource
import shutil
import socket
import threading
import traceback
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tifffile
from PIL import Image

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("index", "seed", "n_instances", "seconds", "host", "render_backend", "render_device",
                   "software", "fingerprint")


def sample_files(index: int) -> Dict[str, str]:
    """Relative paths of a sample's files (DESIGN.md section 8)."""
    i = index
    return {
        "image": f"images/image_{i}.png",
        "instance": f"masks/instance/{i}.tif",
        "semantic": f"masks/semantic/{i}.tif",
        "cytoplasm": f"masks/cytoplasm/{i}.tif",
        "tissue": f"masks/tissue/{i}.tif",
        "foreground": f"masks/foreground/{i}.tif",
        "three_class": f"masks/instance_3class/{i}.tif",
        "stack": f"masks/instance_3d/{i}/{i}_stack.npy",
        "metadata": f"metadata/{i}.json",
        "cells_csv": f"metadata/{i}.csv",
        "parameters": f"parameters/{i}.json",
        "scene": f"scenes/{i}.npz",
        "preview": f"previews/{i}.png",
        "soft": f"masks/soft/{i}.tif",
        "soft_instances": f"masks/soft_instances/{i}.tif",
        "overlap": f"masks/overlap/{i}.tif",
        "defocus": f"masks/defocus/{i}.tif",
    }


def folder_name(text: str, what: str) -> str:
    """``text`` if it names one folder inside another (no separator, not ``.`` or ``..``), so that
    a name given on the command line never writes outside its parent.

    Raises:
        ValueError: naming ``what``.
    """
    if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
        raise ValueError(f"{what}={text!r} is not a folder name (no '/', '\\', '.' or '..')")
    return text


def level_name(level: float) -> str:
    """Folder suffix of a label-noise level: ``20`` for 20.0, ``12.5`` for 12.5."""
    return f"{level:g}"


def noise_files(index: int, level: str, annotator: Optional[int] = None) -> Dict[str, str]:
    """Relative paths of one label-noise variant (the reference's ``{task}_noise_{level}`` folders);
    simulated annotator k of that level has the suffix ``_annotator_<k>``."""
    i = index
    name = level if annotator is None else f"{level}_annotator_{annotator}"
    return {
        "semantic": f"masks/semantic_noise_{name}/{i}.tif",
        "instance": f"masks/instance_noise_{name}/{i}.tif",
        "three_class": f"masks/instance_3class_noise_{name}/{i}.tif",
        "foreground": f"masks/foreground_noise_{name}/{i}.tif",
        "record": f"metadata/noise_{name}/{i}.json",
    }


def agreement_files(index: int, level: str) -> Dict[str, str]:
    """Relative paths of the per-pixel agreement of one level's simulated annotators."""
    return {
        "semantic_agreement": f"masks/semantic_agreement_noise_{level}/{index}.tif",
        "foreground_votes": f"masks/foreground_votes_noise_{level}/{index}.tif",
    }


def sample_patterns(index: int) -> List[str]:
    """Glob patterns of every file a sample can have: its fixed files, stack slices, label-noise
    variants at any level and the optional Blender file."""
    i = index
    return [*sample_files(i).values(), f"{slice_dir(i)}/*", f"masks/*_noise_*/{i}.tif",
            f"metadata/noise_*/{i}.json", f"scenes/{i}.blend"]


def layout_folders() -> List[str]:
    """The top folders of a dataset (``images``, ``masks``, ..., ``failures``, ``jobs``)."""
    return sorted({path.split("/")[0] for path in sample_files(0).values()} |
                  {"failures", "jobs", "logs", ".staging", "variations"})


def failure_file(index: int) -> str:
    return f"failures/{index}.json"


def slice_dir(index: int) -> str:
    return f"masks/instance_3d/{index}"


def slice_file(index: int, k: int) -> str:
    return f"{slice_dir(index)}/{index}_{k}.tif"


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def compact_runs(seeds: Sequence[int]) -> List[List[int]]:
    """``[[0, 3], [7, 7]]`` for [0, 1, 2, 3, 7]: inclusive runs of consecutive seeds."""
    runs: List[List[int]] = []
    for s in sorted(set(seeds)):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return runs


def compact(seeds: Sequence[int]) -> str:
    """``0-3,7,9-10`` for [0, 1, 2, 3, 7, 9, 10]."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in compact_runs(seeds))


class ConfigConflict(RuntimeError):
    """A sample was completed by a job with another configuration while this one rendered it."""


class ManifestError(ValueError):
    """The manifest of a dataset cannot be trusted; the message names the file and line."""


class Dataset:
    """One dataset folder (``output.root``). ``fingerprint`` is the config fingerprint that
    :meth:`commit` records with each sample (``arctique.config.fingerprint``)."""

    def __init__(self, root: Path, fingerprint: str = "") -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.replaces_others = False  # a job that redoes samples (output.overwrite) may replace another config's
        self.redo_option = "output.overwrite=true"  # how the command that writes names that, for its messages
        # Held while a sample is committed or a record written, so that a stop on a signal
        # (arctique.stopping) waits until they are whole.
        self.writing = threading.RLock()

    @contextmanager
    def _locked_manifest(self) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".manifest.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.root / MANIFEST
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def manifest(self) -> List[Dict[str, str]]:
        """The rows of the manifest, one per complete sample.

        Raises:
            ManifestError: naming the line of a hand-edited or damaged manifest (no header, a row
                without a sample index, a sample twice), so that nothing is counted twice or lost.
        """
        path = self.root / MANIFEST
        if not path.exists():
            return []
        if path.is_dir():
            raise ManifestError(f"{path} is a folder, not the dataset's manifest; move it away")
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "index" not in (reader.fieldnames or []):
                raise ManifestError(f"{path}: the first line is not the header {','.join(MANIFEST_FIELDS)}; "
                                    "the manifest was edited or damaged")
            rows, line_of = [], {}
            for row in reader:
                index = row["index"]
                if not (index or "").isdigit():
                    raise ManifestError(f"{path} line {reader.line_num}: {index!r} is not a sample index; "
                                        "the manifest was edited or damaged")
                if index in line_of:
                    raise ManifestError(f"{path} line {reader.line_num}: sample {index} is listed twice "
                                        f"(also line {line_of[index]}); remove one of the rows")
                line_of[index] = reader.line_num
                rows.append(row)
        return rows

    def completed(self) -> set:
        return {int(row["index"]) for row in self.manifest()}

    def is_complete(self, index: int) -> bool:
        return index in self.completed()

    def forget(self, index: int) -> None:
        """Drop a sample's manifest row (before it is rewritten), so it counts as incomplete."""
        with self.writing, self._locked_manifest() as path:
            rows = [r for r in self.manifest() if int(r["index"]) != index]
            _write_rows_atomically(path, rows)

    def sample_paths(self, index: int) -> Set[Path]:
        """Every file of sample ``index`` now in the dataset."""
        return {p for pattern in sample_patterns(index) for p in self.root.glob(pattern) if p.is_file()}

    def commit(self, index: int, staged: Path, row: Mapping[str, Any]) -> None:
        """Remove the files of an earlier render of the sample that the staged render lacks, move the
        staged files into place, then append the manifest row (with this dataset's fingerprint).

        All under the manifest lock, and refused when another job completed the sample meanwhile
        with another configuration (the check at a job's start cannot see a job running beside it),
        unless this job redoes samples (``replaces_others``).

        Raises:
            ConfigConflict: naming the sample; nothing of it is changed.
        """
        with self.writing, self._locked_manifest() as path:
            rows = self.manifest()
            earlier = [r["fingerprint"] for r in rows if int(r["index"]) == index and r.get("fingerprint")]
            if earlier and earlier[0] != self.fingerprint and not self.replaces_others:
                raise ConfigConflict(f"sample {index} was completed meanwhile in {self.root} by a job with another "
                                     "configuration; this job's render of it is discarded (one configuration "
                                     f"per dataset folder, or {self.redo_option} to redo)")
            new = sorted(p for p in staged.rglob("*") if p.is_file())
            keep = {self.root / p.relative_to(staged) for p in new}
            for stale in self.sample_paths(index) - keep:
                stale.unlink()
                self._remove_empty_folders(stale.parent)
            for src in new:
                dst = self.root / src.relative_to(staged)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
            shutil.rmtree(staged, ignore_errors=True)
            self._remove_dead_staging(index)
            rows = [r for r in rows if int(r["index"]) != index]
            full = {**row, "fingerprint": self.fingerprint}
            rows.append({k: str(full[k]) for k in MANIFEST_FIELDS})
            rows.sort(key=lambda r: int(r["index"]))
            _write_rows_atomically(path, rows)

    def _remove_empty_folders(self, folder: Path) -> None:
        """Remove ``folder`` and its parents inside the dataset while they are empty: a noise level
        that no sample has any more leaves no folder that readers would take for a written level."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or in use by another job): kept
                return
            folder = folder.parent

    def record_failure(self, index: int, exc: BaseException) -> None:
        """Write ``failures/<i>.json``: what failed, where and the traceback (a sample can be retried)."""
        self._record(index, {"error": f"{type(exc).__name__}: {exc}",
                             "traceback": "".join(traceback.format_exception(exc))})

    def record_interruption(self, index: int, signal_name: str) -> None:
        """Write ``failures/<i>.json`` for a sample stopped by a signal (retried like a failure)."""
        self._record(index, {"error": f"interrupted by {signal_name}", "interrupted": True})

    def _record(self, index: int, what: Dict[str, Any]) -> None:
        record = {"index": index, "seed": index, **what, "host": socket.gethostname(), "pid": os.getpid(),
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with self.writing:
            write_text_atomically(self.root / failure_file(index), to_json(record))

    def record_job(self, seeds: Sequence[int]) -> None:
        """Write ``jobs/<id>.json`` with the seeds a job is to make, when it starts, so that the
        dataset's state can be judged against them even if the job is killed."""
        runs = compact_runs(seeds)
        name = hashlib.sha256(json.dumps(runs).encode()).hexdigest()[:12]
        record = {"seeds": runs, "fingerprint": self.fingerprint, "host": socket.gethostname(),
                  "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with self.writing:
            write_text_atomically(self.root / "jobs" / f"{name}.json", to_json(record))

    def expected_seeds(self) -> Set[int]:
        """The seeds of every job started in this dataset."""
        return {s for path in (self.root / "jobs").glob("*.json")
                for a, b in json.loads(path.read_text())["seeds"] for s in range(a, b + 1)}

    def clear_failure(self, index: int) -> None:
        (self.root / failure_file(index)).unlink(missing_ok=True)

    def failures(self) -> Dict[int, Dict[str, Any]]:
        out = {}
        for path in sorted((self.root / "failures").glob("*.json")):
            record = json.loads(path.read_text())
            out[int(record["index"])] = record
        return out

    def _staging_path(self, index: int) -> Path:
        return self.root / ".staging" / f"{index}.{socket.gethostname()}.{os.getpid()}"

    def staging(self, index: int) -> Path:
        """This process's private folder for a sample's files until they are committed
        (``.staging/<i>.<host>.<pid>``: concurrent jobs never share one)."""
        path = self._staging_path(index)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def discard_staging(self, index: int) -> None:
        shutil.rmtree(self._staging_path(index), ignore_errors=True)

    def staged_samples(self) -> Dict[int, bool]:
        """Seeds with a staging folder, each with whether its process may still be at work (it
        runs, or runs on another host, where this one cannot tell)."""
        out: Dict[int, bool] = {}
        for path in (self.root / ".staging").glob("*.*"):
            seed, owner_host, pid = staging_owner(path)
            if seed.isdigit() and path.is_dir():
                out[int(seed)] = out.get(int(seed), False) or may_run(owner_host, pid)
        return out

    def foreign_staging(self) -> List[Path]:
        """Staging folders of processes on other hosts: this host cannot tell whether their job still
        runs, so no job removes them (``arctique-summary`` lists them with the way to do it)."""
        host = socket.gethostname()
        return sorted(path for path in (self.root / ".staging").glob("*.*")
                      if path.is_dir() and staging_owner(path)[1] != host)

    def _remove_dead_staging(self, index: int) -> None:
        """Drop staging folders of ``index`` left by killed processes of this host."""
        for path in (self.root / ".staging").glob(f"{index}.*"):
            if not may_run(*staging_owner(path)[1:]):
                shutil.rmtree(path, ignore_errors=True)


def staging_owner(path: Path) -> Tuple[str, str, str]:
    """The seed, host and process id in the name of a staging folder, ``<seed>.<host>.<pid>`` (a
    host name may hold dots)."""
    seed, _, owner = path.name.partition(".")
    host, _, pid = owner.rpartition(".")
    return seed, host, pid


def may_run(host: str, pid: str) -> bool:
    """Whether the process ``pid`` of ``host`` may still be at work: it runs on this host, or it is
    on another host (or its name is not a process id), where this host cannot tell."""
    return host != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_rows_atomically(path: Path, rows: List[Mapping[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, buf.getvalue())


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:  # a full disk or a signal leaves no temporary file behind
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------ file writers


def write_label_tiff(path: Path, labels: np.ndarray, mpp: float) -> None:
    """Integer label TIFF with the pixel size in the resolution tags and a JSON description."""
    path.parent.mkdir(parents=True, exist_ok=True)
    px_per_cm = 1e4 / mpp
    tifffile.imwrite(path, labels, compression="zlib", resolution=(px_per_cm, px_per_cm),
                     resolutionunit="CENTIMETER", metadata={"mpp_um": mpp}, software="arctique-gen")


def write_array(path: Path, array: np.ndarray) -> None:
    """``np.save``, with a short write reported as one (numpy raises an OSError without errno when
    the file system takes fewer bytes than it was given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        np.save(path, array)
    except OSError as e:
        if e.errno is None:
            raise short_write(path, array.nbytes) from e
        raise


# Errors of a write that found no room: a full file system or quota, or a file size limit.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def short_write(path: Path, nbytes: int) -> OSError:
    """The error of a write of ``nbytes`` that the file system took only in part, for writers that
    report none of their own (numpy, Blender): EFBIG above the process's file size limit
    (``ulimit -f``), else ENOSPC."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        return OSError(errno.EFBIG, f"File too large: the file size limit (ulimit -f) is {size_text(limit)}",
                       str(path))
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def size_text(nbytes: float) -> str:
    """``100 KB``, ``23 MB``, ``1.2 GB``: a size in the unit that shows it (a full disk's few KB
    are not "0 MB")."""
    for unit in ("bytes", "KB", "MB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def png_resolution(mpp: float) -> Dict[str, Any]:
    """Pillow's PNG options that record the pixel size (the pHYs chunk: 10^6 / mpp pixels per metre)."""
    return {"dpi": (25400 / mpp,) * 2}


def write_png(path: Path, rgb: np.ndarray, mpp: float) -> None:
    """An RGB PNG that records its pixel size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # compress level 3: 2.5x faster than 6, 8 % larger
    Image.fromarray(rgb).save(path, format="PNG", compress_level=3, **png_resolution(mpp))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_cells_csv(path: Path, cells: List[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    if cells:
        flat = [{k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in c.items()} for c in cells]
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
    write_text(path, buf.getvalue())
