"""Work beside the sample (``arctique.parallel``): forked results, deferred work and the memory of a process tree."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from arctique.parallel import BACKGROUND_NICENESS, Background, BackgroundFailed, TreeMemory, can_fork


def _pid_and_sum(values: np.ndarray):
    return os.getpid(), float(values.sum())


def _fails():
    raise ValueError("no such nucleus")


def _holds(megabytes: int, seconds: float) -> int:
    block = np.ones(megabytes * 2**20 // 8)  # touched, so resident
    time.sleep(seconds)
    return int(block.size)


def test_forked_work_shares_the_parents_arrays_and_returns_its_value():
    assert can_fork(2) and not can_fork(1)
    values = np.arange(1_000_000, dtype=float)
    job = Background("sum", 2, _pid_and_sum, values)
    pid, total = job.result()
    assert pid != os.getpid() and total == values.sum()
    assert job.result() == (pid, total)  # asked again: the same value, nothing rerun


def test_forked_work_yields_the_cores_to_the_job():
    """A child runs below the job's priority, so the job's own chain of work is served first."""
    assert BACKGROUND_NICENESS > 0
    assert Background("niceness", 2, os.nice, 0).result() == os.nice(0) + BACKGROUND_NICENESS


def test_work_on_one_core_runs_once_in_this_process_when_asked_for():
    calls = []

    def count(x):
        calls.append(x)
        return os.getpid()

    job = Background("count", 1, count, 7)
    assert calls == []
    assert job.result() == os.getpid() and job.result() == os.getpid()
    assert calls == [7]


def test_a_failure_in_the_child_is_raised_with_its_traceback():
    with pytest.raises(BackgroundFailed, match=r"(?s)check failed in its process: ValueError: no such nucleus.*_fails"):
        Background("check", 2, _fails).result()


def test_tree_memory_counts_a_childs_private_memory_once():
    with TreeMemory(interval=0.02) as alone:
        time.sleep(0.2)
    with TreeMemory(interval=0.02) as both:
        assert Background("hold", 2, _holds, 300, 1.0).result() == 300 * 2**20 // 8
    # the sampled figures: ``peak_bytes`` is at least this process's high-water mark over its whole life
    assert both.sampled - alone.sampled > 250 * 2**20
    assert both.peak_bytes >= both.sampled
