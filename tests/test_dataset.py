"""Dataset behaviour: skip complete samples, overwrite on request, never report a partial sample."""

from __future__ import annotations

import os

import pytest

from arctique.compose import load_config
from arctique.io.dataset import Dataset, sample_files
from arctique.pipeline import run

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


def test_output_root_is_honoured(tmp_path):
    run_cli(tmp_path, "seed=1", *SMALL, "output.root=elsewhere/data")
    assert Dataset(tmp_path / "elsewhere/data").completed() == {1}
    assert not (tmp_path / "rendered").exists()


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
    assert counts == {"rendered": 1, "skipped": 0}
    assert dataset.is_complete(8)
    for rel in sample_files(8).values():
        assert (tmp_path / "data" / rel).is_file()
