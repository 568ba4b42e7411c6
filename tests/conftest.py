"""Shared fixtures: small real renders through the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pytest

# Hide every GPU from CUDA/OptiX and HIP, so that optics.device=gpu fails on any machine.
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": "", "ROCR_VISIBLE_DEVICES": ""}

# A small but complete sample: 96 x 96 px at 1 um/px, 4 samples per pixel, 4 slices.
SMALL = ("optics.image_size=96", "optics.mpp=1.0", "optics.samples=4", "output.z_slices=4",
         "cells.mesh_subdivisions=2", "output.preview=true")


def run_cli(cwd: Path, *overrides: str, check: bool = True,
            env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """``arctique-gen <overrides>`` in ``cwd`` (the installed entry point's module), with ``env``
    added to the environment."""
    proc = subprocess.run([sys.executable, "-m", "arctique.commands.gen", *overrides], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"arctique-gen failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def render_small(cwd: Path, seed: int = 3, extra: Sequence[str] = ()) -> Path:
    run_cli(cwd, f"seed={seed}", *SMALL, *extra)
    return cwd / "rendered"


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """One small sample (seed 3) rendered from the command line."""
    return render_small(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def export_dataset(tmp_path_factory) -> Path:
    """Three small samples (seeds 3-5, 128 x 128 px at 1 um/px) with label noise at level 50."""
    cwd = tmp_path_factory.mktemp("export")
    small = [o for o in SMALL if not o.startswith("optics.image_size=")]
    run_cli(cwd, "seed=3", "n_samples=3", *small, "optics.image_size=128", "noise.levels=[50]")
    return cwd / "rendered"
