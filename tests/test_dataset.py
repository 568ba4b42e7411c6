"""Dataset behaviour: skip complete samples, overwrite on request, never report a partial sample."""

from __future__ import annotations

import os

import pytest

from arctique.compose import load_config
from arctique.io.dataset import Dataset, sample_files
from arctique import pipeline
from arctique.pipeline import Counts, run

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


def test_sample_killed_while_committing_is_not_complete_and_is_redone(tmp_path, monkeypatch):
    cfg = load_config([*SMALL, "seed=8", f"output.root={tmp_path / 'data'}"])
    real_replace = os.replace
    moved = []

    def dying_replace(src, dst):
        if len(moved) == 4:
            raise KeyboardInterrupt("killed")
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr("arctique.io.dataset.os.replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, {}, progress=False)
    dataset = Dataset(tmp_path / "data")
    assert len(moved) == 4 and not dataset.is_complete(8)
    monkeypatch.setattr("arctique.io.dataset.os.replace", real_replace)
    counts = run(cfg, {}, progress=False)
    assert counts == Counts(rendered=1, skipped=0)
    assert dataset.is_complete(8)
    for rel in sample_files(8).values():
        assert (tmp_path / "data" / rel).is_file()


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
