"""Scale-out on a real single-node SLURM cluster (scripts/slurm_local.sh): a sharded sweep through
the SLURM launcher preset, one job killed mid-sample, re-submission, and the result compared with a
plain local run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arctique.io.dataset import Dataset, sample_files
from arctique.commands.summary import main as summary_main

from .conftest import NO_GPU_ENV, run_cli

REPO = Path(__file__).resolve().parents[1]
TINY = ("optics.image_size=64", "optics.mpp=1.0", "optics.samples=2", "output.z_slices=2",
        "cells.mesh_subdivisions=2")
# The SLURM preset on a CPU-only cluster: no GPU requested, and rendering on the CPU.
ON_CPU = ("hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
          "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10")
SWEEP = ("-m", "hydra/launcher=slurm", *ON_CPU, "optics.device=cpu", "n_samples=6", "shard.size=3",
         "shard.index=range(0,2)", *TINY)


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    cluster = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts/slurm_local.sh"
    proc = subprocess.run(["bash", str(script), "start", str(cluster)], capture_output=True, text=True)
    if proc.returncode == 3:
        pytest.skip(f"no SLURM on this machine: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    yield str(cluster / "slurm.conf")
    subprocess.run(["bash", str(script), "stop", str(cluster)], check=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> Path:
    """The same six seeds rendered by one plain local run."""
    root = tmp_path_factory.mktemp("local")
    run_cli(root, "seed=0", "n_samples=6", *TINY)
    return root / "rendered"


def _wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start_sweep(cwd: Path, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arctique.commands.gen", *SWEEP], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _signal_during_seed_4(root: Path, sig: int) -> None:
    """Shard 1 renders seeds 3, 4, 5: signal its process while seed 4 is half written."""
    staging = root / ".staging"
    _wait_for(lambda: any(staging.glob("4.*")), "seed 4 to start")
    os.kill(int(next(staging.glob("4.*")).name.rpartition(".")[2]), sig)


def _interrupt(proc: subprocess.Popen) -> None:
    """SIGINT, then SIGTERM if the process is still there a minute later (on a freshly installed CI
    machine a sweep has outlived the first interrupt)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()


def _squeue(env) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %T %r"], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _assert_complete_and_identical(root: Path, reference: Path) -> None:
    dataset = Dataset(root)
    assert [int(r["index"]) for r in dataset.manifest()] == list(range(6)), "every sample exactly once"
    assert not any(p for p in (root / ".staging").glob("*") if any(p.iterdir())), "no half-written leftovers"
    for seed in range(6):
        files = sample_files(seed)
        for key in ("instance", "semantic", "cytoplasm", "stack", "scene", "cells_csv"):
            assert (root / files[key]).read_bytes() == (reference / files[key]).read_bytes(), (seed, key)
    with pytest.raises(SystemExit) as summary_exit:
        summary_main([str(root), "--seeds", "0:6"])
    assert summary_exit.value.code == 0


def test_preempted_job_is_requeued_and_loses_only_the_sample_in_progress(slurm_conf, local_reference, tmp_path):
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    sweep = _start_sweep(tmp_path, env)
    # SIGUSR2 is what SLURM sends before a time limit or a preemption (--signal); submitit requeues
    _signal_during_seed_4(tmp_path / "rendered", signal.SIGUSR2)
    _wait_for(lambda: "BeginTime" in _squeue(env), "the job to be requeued")
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    _assert_complete_and_identical(tmp_path / "rendered", local_reference)


def test_killed_job_is_completed_by_resubmitting(slurm_conf, local_reference, tmp_path):
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    root = tmp_path / "rendered"
    sweep = _start_sweep(tmp_path, env)
    _signal_during_seed_4(root, signal.SIGKILL)  # as the OOM killer or a failing node would
    _wait_for(lambda: _squeue(env) == "", "both array jobs to end")
    if sweep.poll() is None:  # without SLURM accounting submitit cannot see a killed job's state
        _interrupt(sweep)
    sweep.communicate(timeout=60)
    assert sweep.returncode != 0, "a sweep with a killed job must not succeed"
    done = Dataset(root).completed()
    assert {0, 1, 2, 3} <= done and not {4, 5} & done
    assert any((root / ".staging").glob("4.*")), "the killed sample stays in staging, not in place"

    again = _start_sweep(tmp_path, env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    _assert_complete_and_identical(root, local_reference)


def test_unusable_device_fails_its_job_before_any_scene_and_the_sweep_fails(slurm_conf, tmp_path):
    """A job asking for an unreachable GPU (GPUs hidden) stops before writing anything; the other shard completes."""
    env = {**os.environ, "SLURM_CONF": slurm_conf, **NO_GPU_ENV}
    proc = subprocess.run([sys.executable, "-m", "arctique.commands.gen", "-m", "hydra/launcher=slurm", *ON_CPU,
                           "optics.device=cpu,gpu", "seed=7", *TINY, "output.root=data/${optics.device}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert Dataset(tmp_path / "data/cpu").completed() == {7}
    assert not (tmp_path / "data/gpu").exists()


def test_slurm_preset_renders_on_the_gpu_by_default(slurm_conf, tmp_path):
    """Without optics.device on the command line a job of the preset renders on its GPU: with every
    GPU hidden, the job stops for want of one before writing anything, and its log says so."""
    env = {**os.environ, "SLURM_CONF": slurm_conf, **NO_GPU_ENV}
    proc = subprocess.run([sys.executable, "-m", "arctique.commands.gen", "-m", "hydra/launcher=slurm", *ON_CPU,
                           "seed=7", *TINY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert not (tmp_path / "rendered").exists()
    logs = "".join(p.read_text() for p in (tmp_path / "multirun").rglob(".submitit/*/*_log.*"))
    assert "optics.device=gpu but Cycles finds no GPU" in logs


def test_bounded_local_launcher_renders_every_seed(local_reference, tmp_path):
    run_cli(tmp_path, "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "optics.threads=1",
            "seed=0,1,2", *TINY)
    root = tmp_path / "rendered"
    assert Dataset(root).completed() == {0, 1, 2}
    for seed in range(3):
        path = sample_files(seed)["instance"]
        assert (root / path).read_bytes() == (local_reference / path).read_bytes()


def test_slurm_preset_requires_a_partition_before_submitting(tmp_path):
    proc = run_cli(tmp_path, "-m", "hydra/launcher=slurm", "seed=0,1", *TINY, check=False)
    assert proc.returncode != 0
    assert "hydra.launcher.partition is required" in proc.stderr
    assert not (tmp_path / "rendered").exists()
