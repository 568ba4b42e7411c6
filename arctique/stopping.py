"""Stop a job on SIGINT or SIGTERM within seconds, also while Blender renders.

Cycles renders in C with Python's lock released and calls back into Python only at its own hooks,
where Blender prints and swallows a ``KeyboardInterrupt``: a Python signal handler alone runs after
the render, if at all. The C part of Python's signal handling writes the signal number to a wakeup
pipe at once, though. A watcher thread reads that pipe, waits until no sample is being committed
(``Dataset.writing``), ends the job's Blender worker (``render.worker``), discards the staging folder
of the sample in progress, the job's temporary folder and Blender's session folder, records the
sample as interrupted, says so on stderr
(stdout may be silenced during a render) and ends the process with the shell's status for the
signal (130 for SIGINT, 143 for SIGTERM). Complete samples stay complete; the interrupted one is
redone by the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Callable, Dict, List, Optional

from .io import dataset as ds

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_JOB_ENDED = 0  # byte written to the pipe to end the watcher (no signal has number 0)


class StopOnSignal:
    """Context manager for a job writing into ``dataset``; ``current`` is the seed being made, and
    ``on_stop`` what ends the job's other processes (Blender's, ``render.worker``) and removes their
    files before the job's own are cleaned up. Inside it, ``tempfile`` puts temporary files into a
    folder of the job's own."""

    def __init__(self, dataset: ds.Dataset) -> None:
        self.dataset = dataset
        self.current: Optional[int] = None
        self.on_stop: List[Callable[[], None]] = []
        self._previous: Dict[int, object] = {}
        self._pipe: Optional[tuple] = None
        self._scratch: Optional[str] = None
        self._stderr: Optional[int] = None

    def __enter__(self) -> "StopOnSignal":
        self._scratch = tempfile.mkdtemp(prefix="arctique_job_")
        self._previous_tempdir, tempfile.tempdir = tempfile.tempdir, self._scratch
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not the main thread: signals are left to the caller")
            return self
        # The job's own stderr: during a render Blender's output (fd 2 too) goes to its log file.
        self._stderr = os.dup(2)
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, _noted_by_the_watcher)
        threading.Thread(target=self._watch, name="stop-on-signal", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        tempfile.tempdir = self._previous_tempdir
        shutil.rmtree(self._scratch, ignore_errors=True)
        if self._pipe is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.write(self._pipe[1], bytes([_JOB_ENDED]))
        os.close(self._pipe[1])
        os.close(self._stderr)

    def _watch(self) -> None:
        read = self._pipe[0]
        while True:
            received = os.read(read, 1)
            if not received or received[0] == _JOB_ENDED:
                os.close(read)
                return
            if received[0] in STOP_SIGNALS:
                self._stop(signal.Signals(received[0]))

    def _stop(self, sig: signal.Signals) -> None:
        with self.dataset.writing:  # a commit or record in progress finishes first
            seed = self.current
            for end in self.on_stop:
                end()
            shutil.rmtree(self._scratch, ignore_errors=True)
            if "bpy" in sys.modules:  # Blender's session folder, which it removes only at a normal exit
                shutil.rmtree(sys.modules["bpy"].app.tempdir, ignore_errors=True)
            if seed is None:
                message = "job stopped between samples; every finished sample is complete"
            else:
                self.dataset.discard_staging(seed)
                self.dataset.record_interruption(seed, sig.name)
                message = (f"job stopped while making sample {seed}, which is discarded and recorded in "
                           f"{self.dataset.root / ds.failure_file(seed)}; run the same command again to resume")
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os.write(self._stderr, f"arctique: {sig.name}: {message}\n".encode())
            os._exit(128 + sig)


def _noted_by_the_watcher(signum: int, frame: object) -> None:
    """Python-level handler: the watcher thread acts on the signal; nothing to do here."""
