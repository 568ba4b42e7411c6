"""Where Blender runs for a job: in a process of its own (``RenderWorker``), or in this one (``Renderer``).

Importing bpy takes most of a second, building a sample's cells in Blender about a second, and
Blender's clean-up at exit half of one. A worker forked at the start of a job imports bpy while the
job composes its first scene, builds each sample's cells while the job makes the tissue texture,
and ends without Blender's clean-up (its session folder, in a folder the job made for it, is
removed by the job). Requests go through a pipe, pickled; each gets one reply, in order. Both
kinds of renderer have the same methods, so the pipeline does not care where Blender runs.

This module imports no bpy: only the process that renders does.
"""

from __future__ import annotations

import atexit
import logging.config
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional

import numpy as np

from ..config import ArctiqueConf, OpticsConf
from ..parallel import can_fork, end_with_parent
from ..timing import StageTimer

if TYPE_CHECKING:
    from ..appearance import CellStains
    from ..labels.trace import Mesh
    from ..scene.model import SceneModel
    from .blender import SceneRenderer


@dataclass(frozen=True)
class RenderDevice:
    """What renders a sample: the Cycles backend (CPU, OPTIX, CUDA, HIP, ONEAPI) and device names.
    Declared here, not beside the bpy code, so that the job's process reads a worker's reply
    without importing bpy."""

    backend: str
    name: str


@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (H, W, 3) float32 linear transmittance
    device: RenderDevice
    blender: str  # Blender's version
    seconds: Dict[str, float]  # blender_build and render_image


class RenderFailed(RuntimeError):
    """Blender failed on a sample (its message names the kept log), or its process ended."""


class Renderer:
    """Blender in this process: ``build`` a sample's cells, then ``render`` it with its texture."""

    beside = False  # its stages are part of the caller's wall time

    def __init__(self) -> None:
        self._built: Optional["SceneRenderer"] = None

    def check_device(self, optics: OpticsConf) -> None:
        """The device asked for exists (Cycles is asked; its output goes to a temporary log).

        Raises:
            RuntimeError: naming ``optics.device``.
        """
        from .blender import configure_device

        with tempfile.TemporaryDirectory() as scratch:
            configure_device(optics, Path(scratch) / "devices.log")

    def build(self, cfg: ArctiqueConf, scene: "SceneModel", stains: "CellStains", nuclei: "Mesh", bodies: "Mesh",
              save_blend: Optional[Path] = None) -> None:
        from .blender import SceneRenderer

        self._timer = StageTimer(scene.seed)
        self._save_blend = save_blend
        self._built = None
        with self._timer("blender_build"):
            self._built = SceneRenderer(cfg, scene, stains, nuclei, bodies)

    def render(self, textures: np.ndarray) -> Rendered:
        """The image of the sample built last, with the tissue matrix ``textures``."""
        from ._bpy import bpy

        if self._built is None:
            raise RenderFailed("no sample was built to render")
        with tempfile.TemporaryDirectory(prefix="arctique_") as tmp, self._timer("render_image"):
            image = self._built.render_image(Path(tmp), textures)
        if self._save_blend is not None:
            self._built.save_blend(self._save_blend)
        return Rendered(image, self._built.device, bpy.app.version_string, self._timer.seconds)

    @staticmethod
    def configure_logging(config: Dict[str, Any]) -> None:
        logging.config.dictConfig(config)

    def stop(self) -> None:
        """Nothing to end: Blender's session folder goes with the job (``stopping``)."""

    def close(self) -> None:
        self._built = None


class RenderWorker:
    """Blender in a forked process for the whole job, with ``Renderer``'s methods; ``build`` returns at
    once, so the caller works on while Blender builds."""

    beside = True  # its stages run beside the caller's

    def __init__(self) -> None:
        self._scratch = tempfile.mkdtemp(prefix="arctique_blender_")
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(os.getpid(), child_end, self._conn, self._scratch),
                                    name="blender", daemon=True)
        self._process.start()
        child_end.close()
        self._pending = 0

    def _send(self, method: str, *args: Any) -> None:
        self._drain()
        if not self._process.is_alive():  # Blender crashed on the last sample: a new one for this sample
            self._conn.close()
            self._process.join()
            self._start()
        self._post(method, *args)

    def _post(self, method: str, *args: Any) -> None:
        try:
            self._conn.send((method, args))
        except OSError:
            self._ended()
        self._pending += 1

    def _ended(self) -> NoReturn:
        self._pending = 0
        self._process.join(timeout=10)
        raise RenderFailed(f"Blender's process ended (exit code {self._process.exitcode})") from None

    def _reply(self) -> Any:
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            self._ended()
        self._pending -= 1
        if not ok:
            raise value if isinstance(value, OSError) else RenderFailed(value)
        return value

    def _drain(self) -> None:
        """Read the replies of a sample that failed before it read them, so the next sample's replies are its own."""
        while self._pending:
            try:
                self._reply()
            except RenderFailed:
                pass

    def check_device(self, optics: OpticsConf) -> None:
        self._send("check_device", optics)
        self._reply()

    def build(self, cfg: ArctiqueConf, scene: "SceneModel", stains: "CellStains", nuclei: "Mesh", bodies: "Mesh",
              save_blend: Optional[Path] = None) -> None:
        self._send("build", cfg, scene, stains, nuclei, bodies, save_blend)

    def configure_logging(self, config: Dict[str, Any]) -> None:
        self._post("configure_logging", config)  # its reply is read before the next request's

    def render(self, textures: np.ndarray) -> Rendered:
        self._post("render", textures)
        try:
            self._reply()  # the build's
        except RenderFailed:
            self._drain()
            raise
        return self._reply()

    def stop(self) -> None:
        """End Blender at once and remove its files (a job stopped by a signal)."""
        self._process.kill()
        self._process.join()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def close(self) -> None:
        """End the worker after its last reply (it exits without Blender's clean-up)."""
        self._conn.close()
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        shutil.rmtree(self._scratch, ignore_errors=True)


def _serve(parent: int, conn, parent_end, scratch: str) -> None:
    """The worker: Blender's files go to ``scratch``; requests are served until the job closes the pipe."""
    end_with_parent(parent)
    parent_end.close()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the job stops it (RenderWorker.stop)
        signal.signal(sig, signal.SIG_IGN)
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    local = Renderer()
    from . import blender  # noqa: F401  (imports bpy now, while the job builds its first scene)
    from ..io.dataset import NO_SPACE

    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, getattr(local, method)(*args))
        except Exception as exc:  # the sample fails in the job, which goes on with the next ...
            if isinstance(exc, OSError) and exc.errno in NO_SPACE:
                reply = (False, exc)  # ... unless a write found no room: that stops the job (pipeline.DiskFull)
            else:
                reply = (False, f"{exc}" if isinstance(exc, RuntimeError) else
                         f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            conn.send(reply)
        except OSError:  # the job ended without reading it (it stopped before its first sample)
            return


_EARLY: List[RenderWorker] = []  # the worker start_early forked, until start_renderer takes it


def start_early() -> None:
    """Fork the job's worker before its configuration is composed, where this process may fork and
    run on two or more cores, so that Blender loads while Hydra works; ``start_renderer`` takes it,
    and the end of the process ends it if nothing did (a refused configuration)."""
    if can_fork(0) and "bpy" not in sys.modules and not _EARLY:
        _EARLY.append(RenderWorker())
        atexit.register(_end_early)


def log_as_the_job(config: Dict[str, Any]) -> None:
    """Have a worker from ``start_early``, forked before the job configured its logging, log as the
    job does (``config``: for ``logging.config.dictConfig``)."""
    for worker in _EARLY:
        worker.configure_logging(config)


def _end_early() -> None:
    while _EARLY:
        _EARLY.pop().stop()


def start_renderer(optics: OpticsConf) -> Renderer | RenderWorker:
    """A worker where the job may use two or more cores and can fork, unless Blender is loaded in this
    process already (a forked copy of a Blender with running threads can deadlock); else Blender in
    this process. A worker from ``start_early`` is taken, or ended where the job may not use it."""
    early = _EARLY.pop() if _EARLY else None
    if can_fork(optics.threads) and "bpy" not in sys.modules:
        return early or RenderWorker()
    if early is not None:
        early.stop()
    return Renderer()
