"""``arctique-benchmark``: the parts of a design run in turn in one command, and the first failure stops it."""

import os
import subprocess
import sys

import numpy as np
import tifffile

from arctique.config import benchmark_parts
from arctique.io.dataset import Dataset

TINY = ("n_samples=1", "optics.image_size=64", "optics.mpp=1.0", "optics.samples=2", "output.z_slices=2",
        "cells.mesh_subdivisions=2", "output.preview=false")


def benchmark(cwd, *args):
    return subprocess.run([sys.executable, "-m", "arctique.commands.benchmark", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ))


def test_every_preset_of_a_design_is_a_part_clean_and_noisy_first():
    for design in ("laptop", "v3"):
        names = benchmark_parts(design)
        assert names[:2] == ["clean", "noisy"]
        assert sorted(names[2:]) == ["series_colour", "series_focus", "series_intensity", "series_morph",
                                     "series_tears", "series_thickness"]


def test_one_command_renders_each_part_into_its_folders(tmp_path):
    proc = benchmark(tmp_path, "laptop", "--parts", "series_focus,series_morph", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    series = tmp_path / "benchmark/laptop/series"
    focus = sorted(series.glob("optics.focus_offset_um=*"))
    morph = sorted(series.glob("nuclei.lym_to_pla=*"))
    assert len(focus) == 5 and len(morph) >= 2
    for folder in focus + morph:
        assert Dataset(folder).completed() == {25}, folder
    # The focus series moves the focal plane by the swept offsets: the defocus map of one field
    # differs between two offsets by exactly their difference, wherever a nucleus is seen.
    near, far = (tifffile.imread(series / f"optics.focus_offset_um={v}/masks/defocus/25.tif") for v in ("0.0", "2.0"))
    seen = np.isfinite(near)
    assert seen.any() and np.allclose(near[seen] - far[seen], 2.0, atol=1e-4)


def test_a_failing_part_stops_the_benchmark_before_the_next(tmp_path):
    proc = benchmark(tmp_path, "laptop", "--parts", "series_focus,series_morph", *TINY, "optics.samples=0")
    assert proc.returncode != 0
    assert "optics.samples=0 is out of range" in proc.stderr and "laptop/series_focus failed" in proc.stderr
    assert "laptop/series_morph" not in proc.stderr and not (tmp_path / "benchmark").exists()


def test_unknown_parts_are_refused(tmp_path):
    proc = benchmark(tmp_path, "laptop", "--parts", "clean,series_nope")
    assert proc.returncode == 2 and "series_nope not among" in proc.stderr
