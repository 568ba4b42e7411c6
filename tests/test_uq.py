"""Ground truth for uncertainty on small real renders: ambiguity maps checked against independent
BVH ray casting (mathutils) on the scene's own meshes, simulated annotators, class posteriors,
variations and the benchmark presets."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hydra import compose, initialize_config_module
from scipy import stats

from arctique.compose import load_config
from arctique.config import NoiseConf, register_configs
from arctique.io.dataset import agreement_files, noise_files, sample_files
from arctique.labels.noise import noisy_labels
from arctique.pipeline import write_targets
from arctique.scene import load
from arctique.scene.cells import nucleus_mesh
from arctique.commands.vary import main as vary_main

from .conftest import render_small, run_cli
from .test_noise import grid_labels

SEED = 3
ANNOTATORS = 3
UQ = ("noise.levels=[50]", f"noise.annotators={ANNOTATORS}", "nuclei.lym_to_pla=0.3")
MAPS = ("soft", "soft_instances", "overlap", "defocus")


@pytest.fixture(scope="module")
def uq_dataset(tmp_path_factory) -> Path:
    return render_small(tmp_path_factory.mktemp("uq"), SEED, UQ)


def pixels_per_cm(path: Path) -> float:
    with tifffile.TiffFile(path) as tif:
        num, den = tif.pages[0].tags["XResolution"].value
    return num / den


def read(root: Path, key: str, seed: int = SEED):
    path = root / sample_files(seed)[key]
    return tifffile.imread(path) if path.suffix == ".tif" else json.loads(path.read_text())


# ------------------------------------------------------------------ independent ray casting (BVH)


class RayCaster:
    """Every nucleus a vertical ray passes through inside the slab, from repeated BVH casts: a front
    face opens a nucleus, the next back face of the same nucleus closes it."""

    def __init__(self, root: Path):
        import bpy  # noqa: F401  (makes Blender's mathutils importable)
        from mathutils import Vector
        from mathutils.bvhtree import BVHTree

        self.vector = Vector
        self.scene = load(root / sample_files(SEED)["scene"])
        verts, faces, self.rows = nucleus_mesh(self.scene.cells, 2)  # the level of SMALL
        self.tree = BVHTree.FromPolygons(verts.tolist(), faces.tolist())
        self.z0, self.z1 = self.scene.section.z0, self.scene.section.z1

    def pieces(self, x: float, y: float):
        """(top, bottom, cell row) of every stretch inside a nucleus and the slab, topmost first."""
        down = self.vector((0.0, 0.0, -1.0))
        start, end = self.z1 + 30.0, self.z0 - 30.0
        origin = self.vector((x, y, start))
        opened, out = {}, []
        while True:
            loc, normal, face, _ = self.tree.ray_cast(origin, down, origin.z - end)
            if face is None:
                break
            row = int(self.rows[face])
            if normal.dot(down) < 0:
                opened[row] = loc.z
            elif row in opened:
                top, bottom = min(opened.pop(row), self.z1), max(loc.z, self.z0)
                if top > bottom:
                    out.append((top, bottom, row))
            origin = self.vector((x, y, loc.z - 1e-4))
        return sorted(out, key=lambda p: -p[0])


@lru_cache(maxsize=None)
def centre_rays(root: Path):
    """Per pixel centre of the 96 px, 1 um/px render: the BVH pieces of its ray."""
    caster = RayCaster(root)
    size, mpp = 96, 1.0
    return caster, [[caster.pieces((c - size / 2 + 0.5) * mpp, (size / 2 - 0.5 - r) * mpp) for c in range(size)]
                    for r in range(size)]


# ---------------------------------------------------------------------------------- partial volume


def test_soft_mask_is_the_sub_pixel_share_whose_first_hit_is_a_nucleus(uq_dataset):
    soft, soft_instances = read(uq_dataset, "soft"), read(uq_dataset, "soft_instances")
    instance = read(uq_dataset, "instance")
    assert soft.dtype == np.float32 and soft.shape == instance.shape
    assert soft.min() >= 0 and soft.max() <= 1 and soft_instances.dtype == np.uint8
    for key in MAPS:  # the pixel size, as on every label (1 um/px)
        assert pixels_per_cm(uq_dataset / sample_files(SEED)[key]) == 1e4, key
    # Thresholded at 0.5 the soft mask is the hard foreground almost everywhere.
    assert np.mean((soft >= 0.5) == (instance > 0)) >= 0.98
    # Independent: 4 x 4 BVH rays in every partly covered pixel and in some others.
    caster, n = RayCaster(uq_dataset), read(uq_dataset, "metadata")["sample"]["ambiguity"]["subsamples"]
    assert n == 4
    rng = np.random.default_rng(0)
    edge = np.argwhere((soft > 0) & (soft < 1))
    pixels = np.concatenate([edge, rng.integers(0, 96, (200, 2))])
    assert len(edge) > 100
    expected_soft, expected_count = [], []
    for r, c in pixels:
        first = []
        for i in range(n):
            for j in range(n):
                pieces = caster.pieces(c - 48 + (j + 0.5) / n, 48 - r - (i + 0.5) / n)
                if pieces:
                    first.append(pieces[0][2])
        expected_soft.append(len(first) / n**2)
        expected_count.append(len(set(first)))
    got_soft, got_count = soft[pixels[:, 0], pixels[:, 1]], soft_instances[pixels[:, 0], pixels[:, 1]]
    assert np.mean(np.isclose(got_soft, expected_soft)) >= 0.98
    assert np.abs(got_soft - expected_soft).mean() < 0.01
    assert np.mean(got_count == np.array(expected_count)) >= 0.97
    assert (soft_instances[soft > 0] >= 1).all() and (soft_instances[soft == 0] == 0).all()
    assert soft_instances.max() >= 2, "some pixels are shared by two nuclei"


# ------------------------------------------------------------------------------ overlap, defocus


def test_overlap_counts_the_nuclei_on_the_pixel_centre_ray(uq_dataset):
    overlap, instance = read(uq_dataset, "overlap"), read(uq_dataset, "instance")
    assert overlap.dtype == np.uint8
    assert np.array_equal(overlap > 0, instance > 0), "non-zero exactly where the instance mask is"
    _, rays = centre_rays(uq_dataset)
    expected = np.array([[len({p[2] for p in pieces}) for pieces in row] for row in rays])
    assert np.mean(overlap == expected) >= 0.995
    assert (expected >= 2).any(), "the section has overlapping nuclei"
    reconciled = read(uq_dataset, "metadata")["sample"]["ambiguity"]["reconciled_px"]
    assert reconciled <= 0.005 * overlap.size


def test_defocus_is_the_visible_nucleus_depth_from_the_focal_plane(uq_dataset):
    defocus, instance = read(uq_dataset, "defocus"), read(uq_dataset, "instance")
    meta = read(uq_dataset, "metadata")
    assert defocus.dtype == np.float32
    assert np.array_equal(np.isnan(defocus), instance == 0), "NaN exactly on background"
    focus = meta["sample"]["focus_z_um"]
    to_row = {c["id"]: c["scene_cell_id"] - 1 for c in meta["cells"]}
    caster, rays = centre_rays(uq_dataset)
    close = []
    for r, c in np.argwhere(instance > 0):
        visible = [p for p in rays[r][c] if p[2] == to_row[int(instance[r, c])]]
        if visible:
            close.append(abs((visible[0][0] + visible[0][1]) / 2 - focus - defocus[r, c]) < 1e-3)
    assert len(close) >= 0.99 * np.count_nonzero(instance) and np.mean(close) >= 0.99
    z0, z1 = meta["sample"]["slab_um"]
    assert np.nanmin(defocus) >= z0 - focus - 1e-5 and np.nanmax(defocus) <= z1 - focus + 1e-5
    # the per-cell blur is that of what the map shows of the nucleus: the mean defocus of its
    # pixels; a nucleus hidden everywhere takes its centre's depth clipped to the section
    aperture = read(uq_dataset, "parameters")["optics"]["aperture"]
    outside = 0
    for cell in meta["cells"]:
        on = instance == cell["id"]
        centre = cell["centroid_um"][2] - focus
        outside += not z0 - focus <= centre <= z1 - focus
        depth = float(defocus[on].mean()) if on.any() else float(np.clip(centre, z0 - focus, z1 - focus))
        assert cell["blur_radius_px"] == pytest.approx(aperture * abs(depth) / meta["sample"]["mpp_um"], abs=1e-3)
    assert outside > 0, "some nucleus centres lie outside the section: the case that matters"


def test_overlap_share_grows_with_section_thickness(tmp_path):
    shares = []
    for thickness in (2, 6, 14):
        root = render_small(tmp_path, SEED, (f"tissue.section.thickness_um=[{thickness},{thickness}]",
                                             "optics.samples=1", f"output.root=t{thickness}"))
        shares.append(np.mean(tifffile.imread(root.parent / f"t{thickness}" / sample_files(SEED)["overlap"]) >= 2))
    assert shares[0] < shares[1] < shares[2], shares


# ------------------------------------------------------------------------ class posterior, config


def test_class_posterior_records_the_appearance_mixture(uq_dataset):
    cells = read(uq_dataset, "metadata")["cells"]
    names = ["EPI", "PLA", "LYM", "EOS", "FIB", "NEU"]  # class ids 1..6
    assert any(c["class_name"] == "LYM" for c in cells)
    for cell in cells:
        posterior = dict(zip(names, cell["class_posterior"]))
        assert sum(posterior.values()) == pytest.approx(1.0)
        if cell["class_name"] == "LYM":
            assert posterior["LYM"] == pytest.approx(0.7) and posterior["PLA"] == pytest.approx(0.3)
        else:
            assert posterior[cell["class_name"]] == 1.0
    header = (uq_dataset / sample_files(SEED)["cells_csv"]).read_text().splitlines()[0].split(",")
    assert "class_posterior" in header and "blur_radius_px" in header


def test_cli_rejects_bad_annotator_count_before_any_output(tmp_path):
    proc = run_cli(tmp_path, "noise.annotators=101", check=False)
    assert proc.returncode != 0 and "noise.annotators=101 is out of range" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- simulated annotators


def unmoved(record: dict) -> list:
    """Ids of the visible cells whose outline a noise variant left alone (they keep their pixels)."""
    return [r["id"] for r in record["foreground"]
            if not (r["dropout"] or r["scale_px"] or r["shift_px"] or r["elastic"])]


def test_every_annotator_realises_the_requested_rates_from_its_own_streams():
    instance, semantic, stack = grid_labels()
    cfg = NoiseConf(annotators=4)
    level = 30
    n = int(instance.max())
    single = noisy_labels(instance, semantic, stack, 7, level, cfg)
    flips = [{f["id"] for f in single.record["semantic_flips"]}]
    for k in range(cfg.annotators):
        a = noisy_labels(instance, semantic, stack, 7, level, cfg, annotator=k)
        # class flips read from the map, on the cells whose outline the annotator left alone
        left_alone = unmoved(a.record)
        kept = np.isin(instance, left_alone)
        changed = np.unique(instance[kept & (a.semantic != semantic)])
        assert abs(len(changed) / len(left_alone) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(left_alone))
        merges = a.record["touching_pairs"] * 0.3
        assert abs(len(a.record["merges"]) - merges) <= 0.5
        for op in ("dropout", "scale", "shift", "elastic"):
            p = a.record["probabilities"][f"foreground_{op}"]
            assert abs(a.record["realised"][f"foreground_{op}"] - p) < 4 * np.sqrt(p * (1 - p) / n)
        flips.append({int(i) for i in changed})
        again = noisy_labels(instance, semantic, stack, 7, level, cfg, annotator=k)
        for key in ("semantic", "instance", "foreground"):
            assert np.array_equal(getattr(a, key), getattr(again, key)), key
    assert all(flips[i] != flips[j] for i in range(len(flips)) for j in range(i)), "independent streams"


def test_annotator_files_agreement_and_rates_in_a_render(uq_dataset):
    instance, semantic = read(uq_dataset, "instance"), read(uq_dataset, "semantic")
    ids = np.unique(instance[instance > 0])
    labels, votes = [], []
    for k in range(ANNOTATORS):
        out = noise_files(SEED, "50", k)
        record = json.loads((uq_dataset / out["record"]).read_text())
        assert record["annotator"] == k
        noisy = tifffile.imread(uq_dataset / out["semantic"])
        left_alone = [i for i in unmoved(record) if i in ids]  # they keep their pixels: their flips show
        flipped = {int(i) for i in left_alone if (noisy[instance == i] != semantic[instance == i]).any()}
        assert flipped == {f["id"] for f in record["semantic_flips"]} & set(left_alone)
        p = record["probabilities"]["semantic_flip"]
        assert p == 0.5 and record["realised"]["semantic_flip"] == pytest.approx(
            len(record["semantic_flips"]) / len(ids), abs=1e-6)
        assert abs(len(flipped) / len(left_alone) - p) < 4 * np.sqrt(p * (1 - p) / len(left_alone))
        labels.append(noisy)
        votes.append(tifffile.imread(uq_dataset / out["foreground"]))
    files = agreement_files(SEED, "50")
    agreement = tifffile.imread(uq_dataset / files["semantic_agreement"])
    modal = stats.mode(np.stack(labels), axis=0, keepdims=False)
    assert np.allclose(agreement, modal.count / ANNOTATORS)
    assert agreement.min() < 1, "annotators disagree somewhere"
    assert np.allclose(tifffile.imread(uq_dataset / files["foreground_votes"]), np.mean(votes, 0))
    assert all(pixels_per_cm(uq_dataset / rel) == 1e4 for rel in files.values())


def test_an_annotator_does_not_depend_on_how_many_there_are(uq_dataset, tmp_path):
    instance, semantic = read(uq_dataset, "instance"), read(uq_dataset, "semantic")
    stack = np.load(uq_dataset / sample_files(SEED)["stack"])
    for k in (2, 3):
        write_targets(tmp_path / str(k), SEED, instance, semantic, stack, NoiseConf(levels=[50], annotators=k), 1.0)
    for k in (None, 0, 1):
        files = noise_files(SEED, "50", k)
        for key in ("semantic", "instance", "three_class", "foreground"):
            a = (tmp_path / "2" / files[key]).read_bytes()
            assert a == (tmp_path / "3" / files[key]).read_bytes() == (uq_dataset / files[key]).read_bytes()
        records = [json.loads((root / files["record"]).read_text()) for root in (tmp_path / "2", uq_dataset)]
        without_config = [{key: v for key, v in r.items() if key != "noise"} for r in records]
        assert without_config[0] == without_config[1]
    assert not (tmp_path / "2" / noise_files(SEED, "50", 2)["semantic"]).exists()


# ------------------------------------------------------------------------ determinism, variations


def test_same_seed_gives_byte_identical_maps_and_annotators(uq_dataset, tmp_path):
    again = render_small(tmp_path, SEED, (*UQ, "optics.samples=1"))
    rels = [sample_files(SEED)[k] for k in (*MAPS, "metadata")]
    rels += [rel for k in range(ANNOTATORS) for rel in noise_files(SEED, "50", k).values()]
    rels += list(agreement_files(SEED, "50").values())
    for rel in rels:
        a, b = (uq_dataset / rel).read_bytes(), (again / rel).read_bytes()
        if rel.endswith(".json"):
            a, b = json.loads(a), json.loads(b)
        assert a == b, rel


def test_focus_variation_shifts_defocus_and_keeps_the_other_maps(uq_dataset):
    vary_main([str(uq_dataset), "optics.focus_offset_um=1.5", "--name", "focus"])
    varied = uq_dataset / "variations" / "focus"
    for key in ("soft", "soft_instances", "overlap"):
        rel = sample_files(SEED)[key]
        assert (varied / rel).read_bytes() == (uq_dataset / rel).read_bytes(), key
    before, after = read(uq_dataset, "defocus"), read(varied, "defocus")
    assert np.array_equal(np.isnan(before), np.isnan(after))
    assert np.allclose(after[~np.isnan(after)], before[~np.isnan(before)] - 1.5, atol=1e-5)
    cells = read(varied, "metadata")["cells"]
    instance = read(uq_dataset, "instance")
    for cell in cells:  # the mean defocus of each nucleus's pixels moves by the offset (aperture 0.3, 1 um/px)
        on = instance == cell["id"]
        if on.any():
            assert cell["blur_radius_px"] == pytest.approx(0.3 * abs(float(before[on].mean()) - 1.5), abs=1e-3)


# ---------------------------------------------------------------------------------------- presets


def _preset(name: str):
    register_configs()
    with initialize_config_module(config_module="arctique.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={name}"], return_hydra_config=True)
    return load_config([f"+experiment={name}"]), dict(cfg.hydra.sweeper.params or {})


SERIES = {"intensity": "nuclei.intensity", "focus": "optics.focus_offset_um",
          "thickness": "tissue.section.thickness_um", "tears": "tissue.rips.strength",
          "colour": "stain.colour_shift", "morph": "nuclei.lym_to_pla"}


@pytest.mark.parametrize("scale, clean, noisy, series", [("v3", 1500, 1500, 50), ("laptop", 30, 30, 5)])
def test_benchmark_presets_have_the_v3_shape(scale, clean, noisy, series):
    cfg, params = _preset(f"{scale}/clean")
    seeds = range(cfg.seed, cfg.seed + cfg.n_samples)
    assert len(seeds) == clean and not cfg.noise.levels
    shards = int(params["shard.index"].split(",")[1].rstrip(")"))
    assert shards * cfg.shard.size == clean, "the shard sweep covers every seed"
    cfg, params = _preset(f"{scale}/noisy")
    noisy_seeds = range(cfg.seed, cfg.seed + cfg.n_samples)
    assert len(noisy_seeds) == noisy and not set(seeds) & set(noisy_seeds)
    assert cfg.noise.levels == [20, 40, 60, 80, 100] and cfg.noise.annotators >= 2
    roots = {cfg.output.root}
    for name, key in SERIES.items():
        cfg, params = _preset(f"{scale}/series_{name}")
        assert list(params) == [key] and len(params[key].split("],[" if "[" in params[key] else ",")) >= 5
        test_split = seeds[-len(seeds) // 5:]
        assert cfg.n_samples == series and set(range(cfg.seed, cfg.seed + series)) <= set(test_split)
        assert not cfg.noise.levels
        roots.add(cfg.output.root)
    assert len(roots) == 1 + len(SERIES), "every part writes its own dataset"
