"""Stopping, re-running, full disks and bad input never lose or mix data (issue 12)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
import tifffile
from PIL import Image

import arctique
from arctique.compose import load_config
from arctique.config import ConfigError
from arctique.io import dataset as ds
from arctique.io.dataset import Dataset
from arctique.pipeline import DiskFull, check_memory, estimated_memory_bytes, run
from arctique.commands.summary import main as summary_main
from arctique.commands.vary import main as vary_main

from .conftest import run_cli

# Very small renders: 64 x 64 px at 1 um/px.
TINY = ("optics.mpp=1.0", "optics.samples=2", "cells.mesh_subdivisions=2", "output.preview=false")


def start_cli(cwd: Path, *overrides: str) -> subprocess.Popen:
    """``arctique-gen`` as a real process, its temporary files in ``cwd/tmp``."""
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "arctique.commands.gen", *overrides], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(cwd / "tmp")})


def wait_for_line(proc: subprocess.Popen, text: str) -> List[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never logged; got {lines}, stderr {proc.stderr.read()[-2000:]}")


def files_of(root: Path, seed: int) -> List[str]:
    """Every file in the dataset that belongs to sample ``seed``, by the documented layout."""
    names = (f"image_{seed}.png", f"{seed}.tif", f"{seed}.json", f"{seed}.csv", f"{seed}.npz",
             f"{seed}.png", f"{seed}_stack.npy")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and (p.name in names or p.parent.name == str(seed)) and p.parts[len(root.parts)] not in
                  ("failures", "jobs", "variations"))


# ------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_render_at_once_and_leaves_no_complete_looking_sample(tmp_path, sig):
    """A real process gets the signal while Cycles renders sample 30 of 30..32 (4096 samples per
    pixel, so the render is in progress); it must stop there with the shell's status for the signal."""
    proc = start_cli(tmp_path, "seed=30", "n_samples=3", "optics.image_size=64", "optics.samples=4096",
                     *TINY[:1], "output.root=data")
    wait_for_line(proc, "sample 30: render_image")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig
    assert f"{sig.name}: job stopped while making sample 30" in err and "Traceback" not in err
    root = tmp_path / "data"
    assert Dataset(root).completed() == set()
    assert not (root / "images").exists() and not any((root / ".staging").iterdir())
    record = json.loads((root / "failures/30.json").read_text())
    assert record["interrupted"] is True and sig.name in record["error"]
    assert list((tmp_path / "tmp").iterdir()) == []  # Blender's scratch files are gone too
    with pytest.raises(SystemExit) as summary_exit:
        summary_main([str(root)])
    assert summary_exit.value.code == 1


def test_killed_job_is_reported_by_the_summary_with_the_seeds_it_was_started_for(tmp_path, capsys):
    proc = start_cli(tmp_path, "seed=10", "n_samples=3", "optics.image_size=64", *TINY, "output.root=data")
    wait_for_line(proc, "sample 11: render_image")  # its files are being staged
    proc.kill()
    proc.communicate(timeout=60)
    root = tmp_path / "data"
    assert Dataset(root).completed() == {10}
    with pytest.raises(SystemExit) as summary_exit:
        summary_main([str(root)])
    out = capsys.readouterr().out
    assert summary_exit.value.code == 1
    assert "1 complete, 0 failed, 2 missing of seeds 10-12" in out and "interrupted" in out and ": 11" in out
    with pytest.raises(SystemExit) as one_seed:
        summary_main([str(root), "--seeds", "10"])
    assert one_seed.value.code == 0 and "1 complete, 0 failed, 0 missing of seeds 10\n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as span:
        summary_main([str(root), "--seeds", "10:12"])
    assert span.value.code == 1 and "1 missing of seeds 10-11" in capsys.readouterr().out
    for bad in ("a:b", "5:2", "x"):
        with pytest.raises(SystemExit) as bad_exit:
            summary_main([str(root), "--seeds", bad])
        err = capsys.readouterr().err
        assert bad_exit.value.code == 2 and "--seeds" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- re-running a dataset


def test_overwritten_sample_consists_of_exactly_the_files_of_its_new_render(tmp_path):
    first = run_cli(tmp_path, "seed=0", "noise=levels", "optics.image_size=64", *TINY, "output.preview=true",
                    "output.root=D").stdout
    root = tmp_path / "D"
    before = files_of(root, 0)
    assert len([f for f in before if "_noise_" in f]) == 20 and len(list((root / ds.slice_dir(0)).iterdir())) == 11
    # a single-sample run says what it does, stage by stage, and draws no progress bar into the log
    for stage in ("started", "scene_model", "appearance", "blender_build", "render_image", "labels", "ambiguity",
                  "write", "label_noise"):
        assert f"sample 0: {stage}" in first or f"sample 0 (1 of 1): {stage}" in first, stage
    assert "samples:" not in first and "it/s" not in first

    run_cli(tmp_path, "seed=0", "optics.image_size=48", "output.z_slices=4", *TINY, "output.overwrite=true",
            "output.root=D")
    after = files_of(root, 0)
    expected = sorted(["images/image_0.png", "masks/instance/0.tif", "masks/semantic/0.tif",
                       "masks/cytoplasm/0.tif", "masks/tissue/0.tif", "masks/foreground/0.tif",
                       *[f"masks/{m}/0.tif" for m in ("soft", "soft_instances", "overlap", "defocus")],
                       "masks/instance_3class/0.tif", "masks/instance_3d/0/0_stack.npy",
                       *[f"masks/instance_3d/0/0_{k}.tif" for k in range(4)],
                       "metadata/0.json", "metadata/0.csv", "parameters/0.json", "scenes/0.npz"])
    assert after == expected
    for rel in after:
        if rel.endswith(".tif"):
            assert tifffile.imread(root / rel).shape == (48, 48), rel
    assert np.load(root / "masks/instance_3d/0/0_stack.npy").shape == (4, 48, 48)
    assert np.asarray(Image.open(root / "images/image_0.png")).shape == (48, 48, 3)
    assert Dataset(root).completed() == {0}
    # no empty folder of the levels it no longer has, which readers would take for written levels
    assert not list((root / "masks").glob("*_noise_*")) and not list((root / "metadata").glob("noise_*"))
    (root / "masks/instance_noise_40").mkdir()  # as an older version left them
    with pytest.raises(ValueError, match=r"noise level 20 is missing for 1 sample\(s\) .* \(levels written: none\)"):
        arctique.Dataset(root, noise=20)


def test_a_run_with_another_config_stops_before_rendering_unless_overwriting(tmp_path):
    run_cli(tmp_path, "seed=0", "n_samples=2", "optics.image_size=64", *TINY, "output.root=D")
    root = tmp_path / "D"
    image = root / "images/image_0.png"
    stamp = image.stat().st_mtime_ns, (root / ds.MANIFEST).read_bytes()
    for other in (["optics.image_size=48"], ["nuclei.intensity=0.3"], ["noise.levels=[50]"]):
        proc = run_cli(tmp_path, "seed=0", "n_samples=3", "optics.image_size=64", *TINY, *other, "output.root=D",
                       check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "output.root='D' holds samples 0-1 made with another configuration" \
            in proc.stderr and "output.overwrite=true" in proc.stderr
        assert (image.stat().st_mtime_ns, (root / ds.MANIFEST).read_bytes()) == stamp
        assert Dataset(root).completed() == {0, 1}
    # what only says where, how fast or how many does not count as another configuration
    log = run_cli(tmp_path, "seed=0", "n_samples=2", "optics.image_size=64", *TINY, "optics.threads=1",
                  "output.root=D").stdout
    assert "0 rendered, 2 already complete" in log
    run_cli(tmp_path, "seed=1", "optics.image_size=48", *TINY, "output.overwrite=true", "output.root=D")
    assert tifffile.imread(root / "masks/instance/1.tif").shape == (48, 48)
    proc = run_cli(tmp_path, "seed=0", "n_samples=2", "optics.image_size=64", *TINY, "output.root=D", check=False)
    assert proc.returncode == 2 and "holds samples 1 made with another" in proc.stderr


# ------------------------------------------------------------------------------------- full disks


def _no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")] and \
        not [p for p in (root / ".staging").rglob("*") if p.is_file()]


def test_full_disk_stops_the_job_at_once_keeping_complete_samples(tmp_path, monkeypatch):
    cfg = load_config([*TINY, "optics.image_size=64", "seed=1", "n_samples=4", f"output.root={tmp_path / 'data'}"])
    real = ds.write_label_tiff
    attempted = []

    def full_from_seed_2(path, labels, mpp):
        attempted.append(path.name)
        if path.name == "2.tif":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, labels, mpp)

    monkeypatch.setattr(ds, "write_label_tiff", full_from_seed_2)
    with pytest.raises(DiskFull) as stop:
        run(cfg, {}, progress=False)
    message = str(stop.value)
    assert "\n" not in message and message.startswith(f"disk full at {(tmp_path / 'data').absolute()} (")
    assert "free) while writing sample 2" in message and "for the 3 samples left" in message
    assert message.endswith("run the same command again: it resumes")
    dataset = Dataset(tmp_path / "data")
    assert dataset.completed() == {1} and dataset.failures() == {}
    assert "3.tif" not in attempted and "4.tif" not in attempted  # stopped at once
    assert _no_temporary_files(tmp_path / "data")


def test_short_write_of_the_stack_stops_the_job_at_once(tmp_path, monkeypatch):
    """numpy reports a short write as an OSError without errno, whatever free space is left (a quota,
    reserved blocks): it is a full disk, not a failed sample to go past."""
    cfg = load_config([*TINY, "optics.image_size=64", "seed=1", "n_samples=3", f"output.root={tmp_path / 'data'}"])
    saves = []

    def short(path, array):
        saves.append(path)
        raise OSError(f"{array.nbytes} requested and 4096 written")

    monkeypatch.setattr(np, "save", short)
    with pytest.raises(DiskFull, match=r"^disk full at .* free\) while writing sample 1: job stopped"):
        run(cfg, {}, progress=False)
    assert len(saves) == 1 and Dataset(tmp_path / "data").completed() == set()
    assert not (tmp_path / "data" / "failures").exists() and _no_temporary_files(tmp_path / "data")


def test_sizes_in_messages_are_in_the_unit_that_shows_them():
    assert [ds.size_text(n) for n in (0, 100 * 1024, 2.5 * 2**20, 3 * 2**30)] == \
        ["0 bytes", "100 KB", "2 MB", "3.0 GB"]


def test_file_size_limit_ends_the_job_with_one_line(tmp_path):
    """Under ``ulimit -f`` Blender's image and the dataset's files come out short or refused (EFBIG):
    the job ends at once naming the limit, and no sample fails on a zero-size image."""
    import resource

    limit = 32 * 1024  # a 64 x 64 render is a 64 KB EXR

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "arctique.commands.gen", "seed=0", "n_samples=2",
                           "optics.image_size=64", *TINY], cwd=tmp_path, capture_output=True, text=True, preexec_fn=limited)
    root = tmp_path / "rendered"
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("arctique-gen: a file outgrew the file size limit"), proc.stderr
    assert "ulimit -f unlimited" in lines[0]
    assert Dataset(root).completed() == set() and not (root / "failures").exists()


def test_atomic_text_write_leaves_no_temporary_file_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "manifest.csv"
    target.write_text("old\n")
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError):
        ds.write_text_atomically(target, "new contents\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MB file system (root only: elsewhere the simulated full disk above stands in)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root; test_full_disk_stops_the_job_at_once covers the logic")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk_ends_the_job_with_one_line(tmp_path, small_tmpfs):
    proc = run_cli(tmp_path, "seed=0", "n_samples=12", "optics.image_size=96", *TINY,
                   f"output.root={small_tmpfs / 'data'}", check=False)
    root = small_tmpfs / "data"
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"arctique-gen: disk full at {root}") and proc.stderr.count("\n") == 1, proc.stderr
    done = Dataset(root).completed()
    assert 0 < len(done) < 12
    for seed in done:
        assert tifffile.imread(root / f"masks/instance/{seed}.tif").shape == (96, 96)
    assert _no_temporary_files(root) and not (root / "failures").exists()


def test_disk_full_at_job_start_ends_the_job_with_one_line(tmp_path, small_tmpfs):
    with open(small_tmpfs / "filler", "wb") as f:
        with pytest.raises(OSError):
            while True:
                f.write(bytes(64 * 1024))
                f.flush()
    proc = run_cli(tmp_path, "seed=0", "optics.image_size=64", *TINY, f"output.root={small_tmpfs / 'data'}",
                   check=False)
    assert proc.returncode == 1
    assert proc.stderr == f"arctique-gen: disk full at {small_tmpfs / 'data'} (0 bytes free) before the first " \
        "sample: job stopped, complete samples kept; free room for at least one sample and run the same command " \
        "again: it resumes\n", proc.stderr


# ------------------------------------------------------------------------------ unusable places


def _read_only(path: Path):
    path.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only file system stops it
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    else:
        path.chmod(0o555)


@pytest.mark.parametrize("place", ["file", "under_file", "read_only"])
def test_unusable_output_root_stops_before_any_scene_naming_the_key(tmp_path, place):
    blocker = tmp_path / "blocker"
    if place == "read_only":
        _read_only(blocker)
        root = blocker / "data"
    else:
        blocker.write_text("not a folder")
        root = blocker if place == "file" else blocker / "data"
    try:
        proc = run_cli(tmp_path, "optics.image_size=64", *TINY, f"output.root={root}", check=False)
    finally:
        if place == "read_only" and os.geteuid() == 0:
            subprocess.run(["umount", str(blocker)], check=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("arctique-gen: invalid configuration: output.root=") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert "sample 0" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
    assert place == "read_only" or blocker.read_text() == "not a folder"


def test_missing_gpu_stops_before_any_scene_naming_the_key(tmp_path):
    proc = run_cli(tmp_path, "optics.image_size=64", *TINY, "optics.device=gpu", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("arctique-gen: invalid configuration: optics.device=gpu") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_refused_configuration_ends_the_blender_worker_started_before_it(tmp_path):
    """A single run forks its Blender worker before Hydra composes the configuration; a value refused
    after composing ends that worker, and its session folder goes with it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = run_cli(tmp_path, "optics.samples=0", check=False, env={"TMPDIR": str(scratch)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("arctique-gen: invalid configuration: optics.samples=0"), proc.stderr
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


# ----------------------------------------------------------------------------------------- memory


MEASURED_RUN = ("import sys\n"
                "from arctique.commands.gen import main\n"
                "from arctique.parallel import TreeMemory\n"
                "memory = TreeMemory()\n"
                "try:\n    with memory:\n        main(sys.argv[1:])\n"
                "finally:\n    print('peak', memory.peak_bytes, file=sys.stderr)\n")


@pytest.mark.parametrize("overrides", [
    ("seed=2", "optics.image_size=192", "optics.mpp=0.5", "optics.samples=2", "output.z_slices=20"),
    ("seed=2", "optics.image_size=128", "optics.mpp=0.5", "optics.samples=2", "output.soft_subsamples=16"),
], ids=["slices", "soft_subsamples"])
def test_memory_estimate_bounds_a_measured_render_and_refuses_what_does_not_fit(tmp_path, overrides):
    proc = subprocess.run([sys.executable, "-c", MEASURED_RUN, *overrides], cwd=tmp_path, capture_output=True,
                          text=True)
    assert Dataset(tmp_path / "rendered").completed() == {2}, proc.stderr[-3000:]
    peak = int(proc.stderr.split("peak ")[-1])  # the process and its labels process together
    cfg = load_config(overrides)
    estimate = estimated_memory_bytes(cfg)
    assert peak <= estimate <= 2 * peak
    check_memory(cfg, available=estimate)
    with pytest.raises(ConfigError, match=r"^optics.image_size=1\d\d, optics.mpp=0.5, output.z_slices=\d+, "
                                        r"output.soft_subsamples=\d+ and noise.annotators=0 need about [0-9.]+ GiB "
                                        r"per sample, but 0.5 GiB of memory is available$"):
        check_memory(cfg, available=2**29)


def test_memory_estimate_grows_with_every_term_that_scales():
    """A 1024 px sample with 16 x 16 sub-pixel rays went past 12 GiB while estimated at 1.87 GiB."""
    def estimate(*overrides: str) -> int:
        return estimated_memory_bytes(load_config(list(overrides)))

    assert estimate("optics.image_size=1024", "output.soft_subsamples=16") > 12 * 2**30
    base = estimate()
    for more in ("output.soft_subsamples=8", "output.z_slices=40", "optics.image_size=1024"):
        assert estimate(more) > base, more
    assert estimate("noise.levels=[50]", "noise.annotators=100") > estimate("noise.levels=[50]") > base
    assert estimated_memory_bytes(load_config(["optics.image_size=8192", "output.z_slices=100"])) > 40 * base


# ------------------------------------------------------------------------------------ arctique-vary


@pytest.fixture
def copied_dataset(small_dataset, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(small_dataset, root, ignore=shutil.ignore_patterns("variations"))
    return root


def _vary_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        vary_main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_variation_errors_are_one_line_naming_the_file_and_sample(copied_dataset, tmp_path, capsys):
    root = copied_dataset
    missing = tmp_path / "nothing"
    assert f"{missing}: no such dataset folder" in _vary_error(capsys, str(missing), "nuclei.intensity=0.3")
    (tmp_path / "empty").mkdir()
    assert "is not a dataset: it has no manifest.csv" in _vary_error(capsys, str(tmp_path / "empty"),
                                                                     "nuclei.intensity=0.3")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("nuclei: {intensity: [0.3\n")
    assert f"{bad_yaml}: not valid YAML or JSON" in _vary_error(capsys, str(root), "--changes", str(bad_yaml))
    assert "optics.focus_offset is not a configuration key; the nearest key is optics.focus_offset_um" in \
        _vary_error(capsys, str(root), "optics.focus_offset=1")
    params = root / "parameters/3.json"
    saved = json.loads(params.read_text())
    saved["optics"]["mpp"] = 99
    params.write_text(json.dumps(saved))
    err = _vary_error(capsys, str(root), "nuclei.intensity=0.3")
    assert err.startswith(f"arctique-vary: sample 3 ({params}): optics.mpp=99.0 is out of range")
    params.write_text("{ not json")
    assert f"sample 3 ({params}): Expecting property name" in _vary_error(capsys, str(root), "nuclei.intensity=0.3")
    assert not (root / "variations").exists()


def test_variation_name_may_come_before_the_changes(copied_dataset):
    vary_main([str(copied_dataset), "--name", "pale", "nuclei.intensity=0.3"])
    assert Dataset(copied_dataset / "variations/pale").completed() == {3}


def test_a_variation_into_a_folder_of_another_config_names_its_own_options(copied_dataset, capsys):
    err = _vary_error(capsys, str(copied_dataset), "nuclei.intensity=0.3", "--into", str(copied_dataset))
    assert f"--into='{copied_dataset}' holds samples 3 made with another configuration" in err
    assert err.rstrip().endswith("choose another --into, or give --overwrite to redo them")


def test_summary_flags_mixed_configurations_and_staging_of_other_hosts(copied_dataset, capsys):
    root = copied_dataset
    shutil.copy(root / "metadata/3.csv", root / "metadata/4.csv")
    rows = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join([*rows, rows[-1].replace("3,3,", "4,4,", 1)[:-16] + "0" * 16]) + "\n")
    staging = root / ".staging" / "9.elsewhere.123"
    staging.mkdir(parents=True)
    os.utime(staging, (staging.stat().st_atime, staging.stat().st_mtime - 48 * 3600))
    with pytest.raises(SystemExit) as exit_info:
        summary_main([str(root), "--seeds", "3:5"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "mixed configurations: samples 4 made with config 0000000000000000; samples 3 made with config" in out
    assert f"remove them with rm -r): {staging} (48.0 h old)" in out
    assert staging.is_dir()  # never removed: a job on that host may still run


@pytest.mark.parametrize("damage, says", [
    (lambda text: text + text.splitlines()[-1] + "\n", "line 3: sample 3 is listed twice (also line 2)"),
    (lambda text: text + "garbage,,\n", "line 3: 'garbage' is not a sample index"),
    (lambda text: "".join(text.splitlines(True)[1:]), "the first line is not the header index,seed,"),
])
def test_a_damaged_manifest_is_named_by_every_command_before_anything_is_written(copied_dataset, tmp_path, capsys,
                                                                                 damage, says):
    """A hand-edited or damaged manifest (a sample listed twice, a garbage row, no header) is one
    line naming file and line from summary, export and vary; the dataset is left as it was."""
    from arctique.commands.export import main as export_main

    manifest = copied_dataset / ds.MANIFEST
    manifest.write_text(damage(manifest.read_text()))
    damaged = manifest.read_bytes()
    commands = ((summary_main, [str(copied_dataset)]),
                (export_main, [str(copied_dataset), "--out", str(tmp_path / "x"), "--format", "coco"]),
                (vary_main, [str(copied_dataset), "nuclei.intensity=0.3"]))
    for command, args in commands:
        with pytest.raises(SystemExit) as exit_info:
            command(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and str(manifest) in err and says in err and err.count("\n") == 1, err
    assert manifest.read_bytes() == damaged
    assert not (tmp_path / "x").exists() and not (copied_dataset / "variations").exists()


# ------------------------------------------------------------------------------------ terminal


def _terminal_lines(output: str) -> List[str]:
    """The lines a terminal shows for ``output``: a carriage return writes over its line from the start."""
    shown = []
    for line in output.replace("\r\n", "\n").split("\n"):
        text = ""
        for part in line.split("\r"):
            text = part + text[len(part):]
        shown.append(text)
    return shown


def test_progress_bar_is_drawn_on_a_terminal_below_the_log_lines(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "arctique.commands.gen", "seed=0", "n_samples=2",
                             "optics.image_size=48", *TINY], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    shown = _terminal_lines(b"".join(chunks).decode(errors="replace"))
    assert any(line.startswith("samples: 100%") and "2/2" in line for line in shown), shown
    job_lines = [line for line in shown if "(1 of 2): started" in line or "(2 of 2): started" in line
                 or " written to " in line]
    assert len(job_lines) == 4 and not [line for line in job_lines if "samples:" in line], job_lines


# ------------------------------------------------------------------------ one line for each failure


def _one_line(proc: subprocess.CompletedProcess, status: int) -> str:
    assert proc.returncode == status and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("arctique-gen: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("place", ["dangling_link", "manifest_folder", "images_file"])
def test_output_root_of_the_wrong_kind_stops_with_one_line(tmp_path, place):
    root = tmp_path / "D"
    if place == "dangling_link":
        root.symlink_to(tmp_path / "gone")
    else:
        root.mkdir()
        (root / "manifest.csv").mkdir() if place == "manifest_folder" else (root / "images").write_text("x")
    line = _one_line(run_cli(tmp_path, "optics.image_size=48", *TINY, f"output.root={root}", check=False), 2)
    assert line.startswith(f"arctique-gen: invalid configuration: output.root='{root}' cannot be a dataset "
                           "folder"), line
    assert {"dangling_link": "is a link to", "manifest_folder": "manifest.csv is a folder",
            "images_file": "images is a file"}[place] in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


def test_failed_samples_end_the_job_with_one_line(tmp_path):
    (tmp_path / "D/images/image_0.png").mkdir(parents=True)  # the sample's image cannot take its place
    line = _one_line(run_cli(tmp_path, "optics.image_size=48", *TINY, "output.root=D", check=False), 1)
    assert line == "arctique-gen: 1 sample(s) failed (seeds 0); their records are in D/failures/; run the same " \
        "command again to retry them"
    assert Dataset(tmp_path / "D").failures().keys() == {0}


def test_bad_values_of_a_sweep_end_with_one_line_per_job(tmp_path):
    proc = run_cli(tmp_path, "-m", "optics.samples=0,-1", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Error executing" not in proc.stderr
    assert proc.stderr.splitlines() == [f"arctique-gen: invalid configuration: optics.samples={v} is out of range: "
                                        "allowed [1, 4096]" for v in (0, -1)]


def test_ctrl_c_of_a_local_sweep_ends_with_one_line_and_status_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "arctique.commands.gen", "-m", "hydra/launcher=local", "seed=0,1",
                             "optics.image_size=64", "optics.threads=1", *TINY], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for_line(proc, "started")
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == "arctique-gen: SIGINT: sweep stopped; every finished sample is complete, the " \
        "samples in progress are discarded: run the same command again to resume"


def test_help_lists_only_what_works_and_unsupported_flags_are_one_line(tmp_path):
    shown = run_cli(tmp_path, "--help").stdout
    assert "+experiment=" in shown and "v3/clean" in shown and "optics=20x|40x" in shown and "--cfg job" in shown
    for broken in ("install=bash", "shell-completion", "experimental-rerun", "experiment/laptop:", "cli is powered",
                   "hydra-help"):
        assert broken not in shown, broken
    for flag in (("--experimental-rerun", "x"), ("-sc", "install=bash"), ("--hydra-help",)):
        assert _one_line(run_cli(tmp_path, *flag, check=False), 2).startswith(f"arctique-gen: {flag[0]} is not "
                                                                                 "supported: ")
    assert list(tmp_path.iterdir()) == []


def test_a_path_outside_ascii_is_refused_with_the_way_to_quote_it(tmp_path):
    root = tmp_path / "daten_übersicht"
    line = _one_line(run_cli(tmp_path, f"output.root={root}", check=False), 2)
    assert f"""output.root="'{root}'" """ in line, line
    quoted = _one_line(run_cli(tmp_path, f"output.root='{root}'", "optics.samples=0", check=False), 2)
    assert quoted.startswith("arctique-gen: invalid configuration: optics.samples=0")
