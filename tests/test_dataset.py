"""Dataset behaviour: skip complete samples, overwrite on request, never report a partial sample."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from arctique.compose import load_config
from arctique.io.dataset import Dataset, sample_files, write_label_tiff, write_png
from arctique import pipeline
from arctique.pipeline import Counts, generate, run
from arctique.render.worker import Renderer
from arctique.scene import build_scene

from .conftest import SMALL, run_cli


def test_rerun_skips_complete_samples_and_overwrite_redoes_them(tmp_path):
    run_cli(tmp_path, "seed=5", "n_samples=2", *SMALL)
    root = tmp_path / "rendered"
    assert Dataset(root).completed() == {5, 6}
    image = root / sample_files(5)["image"]
    before = image.stat().st_mtime_ns
    log = run_cli(tmp_path, "seed=5", "n_samples=2", *SMALL).stdout
    assert "sample 5 is complete" in log and "0 rendered, 2 already complete" in log
    assert image.stat().st_mtime_ns == before
    assert "1 rendered" in run_cli(tmp_path, "seed=5", *SMALL, "output.overwrite=true").stdout
    assert image.stat().st_mtime_ns != before
    assert Dataset(root).completed() == {5, 6}
    assert len(Dataset(root).manifest()) == 2


def test_output_root_is_honoured_and_the_log_is_ours(tmp_path):
    proc = run_cli(tmp_path, "seed=1", *SMALL, "output.root=elsewhere/data")
    assert Dataset(tmp_path / "elsewhere/data").completed() == {1}
    assert not (tmp_path / "rendered").exists()
    assert "sample 1 written to elsewhere/data" in proc.stdout
    assert "Fra:" not in proc.stdout and "Saved:" not in proc.stdout  # Blender's progress lines


def manifest_indices(root: Path) -> set:
    """Sample indices in ``manifest.csv``, read with the csv module."""
    path = root / "manifest.csv"
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {int(row["index"]) for row in csv.DictReader(f)}


def test_sample_killed_at_any_point_of_its_commit_is_not_complete_and_is_redone(tmp_path, monkeypatch):
    """The sample is interrupted once at every file move of its commit in turn (the render is reused;
    every later move would succeed): its manifest row never exists before all its files are in
    place, and a re-run completes it."""
    cfg = load_config([*SMALL, "seed=8", f"output.root={tmp_path / 'data'}"])
    scene = build_scene(cfg, 8)
    real_build, real_render, rendered = Renderer.build, Renderer.render, []

    def build_once(self, *args):
        if not rendered:
            real_build(self, *args)

    def render_once(self, textures):
        if not rendered:
            rendered.append(real_render(self, textures))
        return rendered[0]

    monkeypatch.setattr(Renderer, "build", build_once)
    monkeypatch.setattr(Renderer, "render", render_once)
    real_replace = os.replace
    moves: list = []

    def counting_replace(src, dst):
        moves.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    generate(cfg, 8, Dataset(tmp_path / "reference"), {}, scene=scene)
    files = set(sample_files(8).values())
    n_moves = len(moves)
    assert n_moves > len(files)

    for k in range(n_moves):
        root = tmp_path / f"killed_at_{k}"
        done: list = []
        fired: list = []

        def dying_replace(src, dst):
            if len(done) == k and not fired:
                fired.append(dst)
                raise KeyboardInterrupt(f"killed before move {k}")
            done.append(dst)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", dying_replace)
        with pytest.raises(KeyboardInterrupt):
            generate(cfg, 8, Dataset(root), {}, scene=scene)
        assert 8 not in manifest_indices(root), f"complete after {k} of {n_moves} moves"
    monkeypatch.setattr(os, "replace", real_replace)
    assert manifest_indices(tmp_path / "reference") == {8}
    assert all((tmp_path / "reference" / rel).is_file() for rel in files)

    # the run redoes the sample left half-committed and completes it
    root = tmp_path / f"killed_at_{n_moves - 1}"
    counts = run(replace(cfg, output=replace(cfg.output, root=str(root))), {}, progress=False)
    assert counts == Counts(rendered=1, skipped=0) and manifest_indices(root) == {8}
    for rel in files:
        assert (root / rel).read_bytes() == (tmp_path / "reference" / rel).read_bytes(), rel


def test_failed_sample_is_recorded_and_the_job_goes_on(tmp_path, monkeypatch):
    cfg = load_config([*SMALL, "seed=8", "n_samples=2", f"output.root={tmp_path / 'data'}"])
    real_targets = pipeline.write_targets

    def broken_for_seed_8(folder, index, *args):
        if index == 8:  # after the image and labels are staged
            raise RuntimeError("no GPU memory left")
        return real_targets(folder, index, *args)

    monkeypatch.setattr(pipeline, "write_targets", broken_for_seed_8)
    counts = run(cfg, {}, progress=False)
    dataset = Dataset(tmp_path / "data")
    assert counts == Counts(rendered=1, skipped=0, failed=[8]) and dataset.completed() == {9}
    record = dataset.failures()[8]
    assert record["error"] == "RuntimeError: no GPU memory left" and "broken_for_seed_8" in record["traceback"]
    assert record["host"] and not list((tmp_path / "data/.staging").glob("8.*"))
    assert not (tmp_path / "data/images/image_8.png").exists()
    monkeypatch.setattr(pipeline, "write_targets", real_targets)
    assert run(cfg, {}, progress=False) == Counts(rendered=1, skipped=1)
    assert dataset.completed() == {8, 9} and dataset.failures() == {}


@pytest.mark.parametrize("mpp, px_per_cm", [(0.5, 20000.0), (0.25, 40000.0), (2.0, 5000.0)])
def test_label_tiffs_carry_the_pixel_size_in_pixels_per_centimetre(tmp_path, mpp, px_per_cm):
    path = tmp_path / "labels.tif"
    write_label_tiff(path, np.zeros((4, 4), np.uint16), mpp)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        for tag in ("XResolution", "YResolution"):
            numerator, denominator = page.tags[tag].value
            assert numerator / denominator == pytest.approx(px_per_cm)
        assert json.loads(page.description)["mpp_um"] == mpp


@pytest.mark.parametrize("mpp, px_per_m", [(0.5, 2_000_000), (0.25, 4_000_000), (2.0, 500_000)])
def test_pngs_carry_the_pixel_size_in_pixels_per_metre(tmp_path, mpp, px_per_m):
    """The pHYs chunk, read back from the file's bytes: metres as unit, 10^6 / mpp pixels each way."""
    import struct

    path = tmp_path / "image.png"
    write_png(path, np.zeros((4, 4, 3), np.uint8), mpp)
    data = path.read_bytes()
    at = data.index(b"pHYs")
    assert struct.unpack(">IIB", data[at + 4: at + 13]) == (px_per_m, px_per_m, 1)


def test_a_sample_completed_meanwhile_by_another_config_is_not_replaced(small_dataset, tmp_path):
    """Two jobs with different configs in one output.root at once both pass the check at their start;
    at commit, under the manifest lock, the second finds the first's row for the sample and stops
    with a clear error, leaving the first's files and row as they were. A job that redoes samples
    (output.overwrite) may replace it."""
    from arctique.io.dataset import ConfigConflict

    root = tmp_path / "data"
    shutil.copytree(small_dataset, root)
    first = Dataset(root).manifest()[0]
    before = {p: p.read_bytes() for p in Dataset(root).sample_paths(3)}
    other = Dataset(root, fingerprint="another-configuration")
    staged = tmp_path / "staged"
    (staged / "images").mkdir(parents=True)
    (staged / "images/image_3.png").write_bytes(b"another render")
    row = {k: first[k] for k in first}
    with pytest.raises(ConfigConflict, match="sample 3 was completed meanwhile"):
        other.commit(3, staged, row)
    assert Dataset(root).manifest() == [first]
    assert {p: p.read_bytes() for p in Dataset(root).sample_paths(3)} == before
    other.replaces_others = True
    other.commit(3, staged, row)
    assert Dataset(root).manifest()[0]["fingerprint"] == "another-configuration"
    assert (root / "images/image_3.png").read_bytes() == b"another render"


def test_staging_folders_tell_dead_local_jobs_from_running_and_foreign_ones(tmp_path):
    """``.staging/<seed>.<host>.<pid>``: a folder of a dead process of this host is left over and
    removed when its seed is written again; one of a running process, or of another host (whose
    name may hold dots), may still be at work and is kept."""
    host = socket.gethostname()
    dataset = Dataset(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {"dead": f"3.{host}.{dead.pid}", "running": f"4.{host}.{os.getpid()}",
               "foreign": "5.node-7.cluster.example.123", "foreign_same_seed": f"3.node-7.cluster.example.{dead.pid}",
               "dead_alone": f"6.{host}.{dead.pid}"}
    for name in folders.values():
        (tmp_path / ".staging" / name).mkdir(parents=True)
    assert dataset.staged_samples() == {3: True, 4: True, 5: True, 6: False}  # seed 3: the foreign folder may run
    assert [p.name for p in dataset.foreign_staging()] == sorted([folders["foreign"], folders["foreign_same_seed"]])
    dataset._remove_dead_staging(3)
    dataset._remove_dead_staging(6)
    assert sorted(p.name for p in (tmp_path / ".staging").iterdir()) == sorted(
        [folders["running"], folders["foreign"], folders["foreign_same_seed"]])
    assert dataset.staged_samples() == {3: True, 4: True, 5: True}
