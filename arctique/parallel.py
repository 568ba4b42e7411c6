"""Work of one sample that runs beside the rest, in a forked process.

A sample's labels need only the scene model and its meshes, and the compartment maps only its
tissue: where a job may use two or more cores, they are made while the stroma is placed, the
tissue texture is made and Blender builds and renders. A forked child shares the parent's scene
arrays without copying or pickling them; only its result comes back, through a pipe. Where
``fork`` does not exist, or the job may use one core (``optics.threads=1``), the work runs in the
calling process when its result is first asked for.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import weakref
from typing import Any, Callable, List, Optional, Tuple


class BackgroundFailed(RuntimeError):
    """The forked work raised, or its process ended without a result; the message carries its traceback."""


# The receiving ends of the pipes of every Background still running in this process: a child
# forked later closes its copies, so that a child whose parent is gone meets a closed pipe.
_RECEIVING: "weakref.WeakSet" = weakref.WeakSet()
_PR_SET_PDEATHSIG = 1  # prctl(2)
# Scheduling priority of a child below the job's process (nice(2) increment): while the job's process
# builds the scene, the longest chain of a sample, its children make what is needed only after it,
# so the kernel serves the chain first (the scene took 2.9 s with children at equal priority,
# 2.45 s with them at 5, medians of four).
BACKGROUND_NICENESS = 5


def end_with_parent(parent: int) -> None:
    """Have the kernel kill this child when its parent dies (a killed job leaves nothing running)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed pipe ends the child after its work
        return
    if os.getppid() != parent:  # the parent died before the request
        os._exit(1)


def _run_child(parent: int, receive, send, work: Callable[..., Any], args: Tuple[Any, ...], niceness: int) -> None:
    end_with_parent(parent)
    os.nice(niceness)
    # Stop at once on the job's signals: the parent's handlers and wakeup pipe belong to the parent.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    for connection in [receive, *_RECEIVING]:
        connection.close()
    try:
        message = (True, work(*args))
    except BaseException as exc:  # reported to the parent, which raises it in the sample
        message = (False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    try:
        send.send(message)
    except OSError:  # the parent is gone; nobody waits for the result
        pass
    finally:
        send.close()


_M_ARENA_MAX = -8  # mallopt(3)


def lean_threads() -> None:
    """Threads that cost neither cores nor memory, in this process and the ones it forks. Numpy's
    BLAS runs on one thread: a job's parallelism is its processes and Blender's threads, and BLAS
    helper threads, idle between the small matrix products of the scene code, spin on the other
    core and take it from the render (about 0.5 core-s of a default sample). And every thread
    allocates from one malloc arena: the threads that receive the children's results each kept an
    arena of their own that grew over a job's first samples (after 16 default samples the job's
    process held about 250 MB instead of 190, Blender's about 520 instead of 470), at no measurable
    cost in time."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    try:
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc
        pass


def can_fork(cores: int) -> bool:
    """Whether work can run beside the caller: ``fork`` exists and the job may use two or more
    cores (``cores``; 0 means every core this process may run on)."""
    if not cores:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return "fork" in multiprocessing.get_all_start_methods() and cores > 1


class Background:
    """``work(*args)`` started now in a forked child at a lower priority (``niceness``, by default
    ``BACKGROUND_NICENESS``; deferred where ``can_fork(cores)`` is false);
    ``result()`` returns its value or raises ``BackgroundFailed``. A thread receives the result as
    soon as it is ready, so the child exits and frees its memory while the parent is still busy."""

    def __init__(self, name: str, cores: int, work: Callable[..., Any], *args: Any,
                 niceness: int = BACKGROUND_NICENESS) -> None:
        self.name = name
        self._work, self._args = work, args
        self._process = None
        self._message: Optional[Tuple[bool, Any]] = None  # (ok, value or traceback), once known
        if not can_fork(cores):
            return
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # no buffered parent output is written twice
            stream.flush()
        self._process = ctx.Process(target=_run_child, args=(os.getpid(), receive, send, work, args, niceness), name=name,
                                    daemon=True)
        self._process.start()
        send.close()
        _RECEIVING.add(receive)
        self._receiver = threading.Thread(target=self._receive, args=(receive,), name=f"{name}-result",
                                          daemon=True)
        self._receiver.start()

    def _receive(self, receive) -> None:
        try:
            self._message = receive.recv()
        except EOFError:
            self._message = None
        finally:
            _RECEIVING.discard(receive)
            receive.close()

    def result(self) -> Any:
        if self._process is None:
            if self._message is None:  # deferred: done here, once
                self._message = (True, self._work(*self._args))
        else:
            self._receiver.join()
            self._process.join()
        if self._message is None:
            raise BackgroundFailed(f"{self.name}: its process ended without a result "
                                   f"(exit code {self._process.exitcode})")
        ok, value = self._message
        if not ok:
            raise BackgroundFailed(f"{self.name} failed in its process: {value}")
        return value

    def cancel(self) -> None:
        """End the child (a sample that failed elsewhere does not wait for its labels)."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join()


def _descendants(pid: int) -> List[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process ended
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = list(map(int, f.read().split()))
        except OSError:  # the thread ended
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))


def tree_pss_bytes() -> int:
    """Proportional set size of this process and its descendants together (Linux)."""
    total = 0
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            total += _pss_bytes(pid)
        except (OSError, StopIteration):  # ended between the listing and the reading
            pass
    return total


class TreeMemory:
    """Peak memory of this process and its children together (Linux), sampled every ``interval``
    seconds in a thread: the sum of their proportional set sizes, which counts a page that a forked
    child shares with its parent once. ``peak_bytes`` is at least this process's own high-water mark,
    which sampling cannot miss."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.sampled = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.sampled = max(self.sampled, tree_pss_bytes())

    def __enter__(self) -> "TreeMemory":
        self._thread = threading.Thread(target=self._sample, name="tree-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_bytes(self) -> int:
        import resource

        return max(self.sampled, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
