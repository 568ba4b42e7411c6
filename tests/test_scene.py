"""Scene model: determinism, stream independence, geometry invariants, statistics (no bpy)."""

from __future__ import annotations

import numpy as np
import pytest

from arctique.compose import load_config
from arctique.scene import CLASS_IDS, build_scene, load, save
from arctique.scene.architecture import compartments, crypt_tree
from arctique.scene.cells import inside_nucleus, nucleus_mesh
from arctique.scene.geometry import bend, icosphere, unbend
from arctique.scene.model import STROMA

SMALL = ["optics.image_size=96", "optics.mpp=1.0"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(SMALL)


def scene_bytes(scene, tmp_path, name):
    path = tmp_path / f"{name}.npz"
    save(scene, path)
    return path.read_bytes()


def test_same_seed_gives_byte_identical_scene_files(cfg, tmp_path):
    assert scene_bytes(build_scene(cfg, 5), tmp_path, "a") == scene_bytes(build_scene(cfg, 5), tmp_path, "b")


def test_different_seeds_differ(cfg):
    a, b = build_scene(cfg, 5), build_scene(cfg, 6)
    assert a.section.thickness != b.section.thickness
    assert not np.array_equal(a.crypts.centre, b.crypts.centre)


def test_save_load_is_lossless(cfg, tmp_path):
    scene = build_scene(cfg, 7)
    save(scene, tmp_path / "s.npz")
    back = load(tmp_path / "s.npz")
    assert back.seed == scene.seed and back.config_json == scene.config_json
    assert back.section.thickness == scene.section.thickness
    for part in ("cells", "crypts", "mucin", "blood"):
        for name, value in vars(getattr(scene, part)).items():
            loaded = getattr(getattr(back, part), name)
            assert np.asarray(value).dtype == np.asarray(loaded).dtype
            assert np.array_equal(value, loaded), (part, name)
    assert scene_bytes(back, tmp_path, "again") == (tmp_path / "s.npz").read_bytes()


def test_population_change_keeps_architecture_pose_and_epithelium(cfg):
    other = load_config(SMALL + ["cells.stroma_density=0.5", "cells.ratios.EOS=0.3"])
    a, b = build_scene(cfg, 11), build_scene(other, 11)
    for name, value in vars(a.section).items():
        assert np.array_equal(value, getattr(b.section, name)), name
    assert np.array_equal(a.crypts.centre, b.crypts.centre)
    epi_a, epi_b = a.cells.cls == CLASS_IDS["EPI"], b.cells.cls == CLASS_IDS["EPI"]
    assert np.array_equal(a.cells.centre[epi_a], b.cells.centre[epi_b])
    assert np.array_equal(a.mucin.centre, b.mucin.centre)
    assert len(a.cells) != len(b.cells)


def test_appearance_keys_do_not_touch_the_scene(cfg, tmp_path):
    other = load_config(SMALL + ["nuclei.intensity=0.1", "stain.colour_shift=0.5", "optics.samples=3",
                                 "optics.focus_offset_um=2", "noise.levels=[20]"])
    assert scene_bytes(build_scene(cfg, 4), tmp_path, "a") == scene_bytes(build_scene(other, 4), tmp_path, "b")


def test_icosphere_is_closed_and_outward():
    v, f = icosphere(2)
    tri = v[f]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert signed == pytest.approx(4 / 3 * np.pi, rel=0.05)  # positive: faces wound outward
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)


def test_bend_is_inverted_by_unbend():
    rng = np.random.default_rng(0)
    p = rng.uniform(-5, 5, size=(100, 3))
    for k in (0.0, 0.05, -0.08):
        assert np.allclose(unbend(bend(p, k), k), p, atol=1e-9)


def test_mesh_vertices_lie_on_the_parametric_surface(cfg):
    scene = build_scene(cfg, 2)
    verts, faces, rows = nucleus_mesh(scene.cells, 2)
    for row in np.unique(rows)[:40]:
        v = verts[np.unique(faces[rows == row])]
        centre = scene.cells.centre[row]
        inner = centre + (v - centre) * 0.97
        outer = centre + (v - centre) * 1.03
        if scene.cells.lobe_count[row] == 1 and scene.cells.curvature[row] == 0:
            assert inside_nucleus(inner, scene.cells, row).mean() > 0.98
            assert not inside_nucleus(outer, scene.cells, row).any()


def _nucleus_points(scene, row, rng, n=400):
    """Random points inside the parametric nucleus of one cell (rejection sampling in its bounds)."""
    c = scene.cells
    reach = (np.linalg.norm(c.lobe_centre[row], axis=1) + c.lobe_axes[row].max(1) * 1.4).max()
    p = c.centre[row] + rng.uniform(-reach, reach, size=(n, 3))
    return p[inside_nucleus(p, c, row)]


@pytest.mark.parametrize("seed", [0, 1])
def test_no_two_nuclei_overlap(cfg, seed):
    scene = build_scene(cfg, seed)
    c = scene.cells
    rng = np.random.default_rng(seed)
    reach = np.array([(np.linalg.norm(c.lobe_centre[i], axis=1) + c.lobe_axes[i].max(1) * 1.2).max()
                      + abs(c.curvature[i]) * 50 for i in range(len(c))])
    from scipy.spatial import cKDTree

    tree = cKDTree(c.centre)
    for i in range(len(c)):
        pts = _nucleus_points(scene, i, rng)
        for j in tree.query_ball_point(c.centre[i], reach[i] + reach.max()):
            if j != i:
                assert not inside_nucleus(pts, c, j).any(), f"nuclei {i} and {j} overlap"


def test_class_sizes_and_elongation_follow_the_config():
    cfg = load_config(["optics.image_size=400", "optics.mpp=0.5"])
    scene = build_scene(cfg, 0)
    c = scene.cells
    for name in ("LYM", "PLA", "FIB", "EPI"):
        rows = np.nonzero((c.cls == CLASS_IDS[name]) & (c.lobe_count == 1))[0]
        conf = getattr(cfg.cells.types, name)
        axes = c.lobe_axes[rows, 0]
        length = 2 * axes[:, 0]
        elong = axes[:, 0] / axes[:, 1]
        assert len(rows) >= 20, name
        if name == "EPI":
            plain = ~c.goblet[rows]
            length, elong = length[plain], elong[plain]
            # Width may be narrowed to fit between neighbours: elongation only grows.
            assert np.all(elong >= conf.elongation[0] - 1e-9)
        else:
            assert np.all((elong >= conf.elongation[0] - 1e-9) & (elong <= conf.elongation[1] + 1e-9))
        assert np.all((length >= conf.length_um[0] - 1e-9) & (length <= conf.length_um[1] + 1e-9)), name


def test_stroma_densities_match_the_config():
    """Cells per stroma volume near the slab, pooled over seeds, within 10 % of the configured value."""
    cfg = load_config(["optics.image_size=500", "optics.mpp=0.5"])
    total = sum(cfg.cells.ratios.values())
    counts = {n: 0 for n in cfg.cells.ratios if cfg.cells.ratios[n] > 0}
    volume = 0.0
    rng = np.random.default_rng(1)
    for seed in range(4):
        scene = build_scene(cfg, seed)
        s = scene.section
        h = s.field_um / 2 + s.margin_um
        z0, z1 = s.z0 - 2.5, s.z1 + 2.5  # within every type's placement region
        inside = (np.abs(scene.cells.centre[:, :2]) <= h).all(1) & (scene.cells.centre[:, 2] >= z0) & (
            scene.cells.centre[:, 2] <= z1)
        for name in counts:
            counts[name] += int(np.sum(inside & (scene.cells.cls == CLASS_IDS[name])))
        p = np.column_stack([rng.uniform(-h, h, (100000, 2)), rng.uniform(z0, z1, 100000)])
        frac = np.mean(compartments(p, s, scene.crypts, crypt_tree(scene.crypts)) == STROMA)
        volume += frac * (2 * h) ** 2 * (z1 - z0)
    for name, n in counts.items():
        expected = cfg.cells.stroma_density * cfg.cells.ratios[name] / total * volume / 1000
        assert n == pytest.approx(expected, rel=0.10), (name, n, expected)


def test_sections_show_round_and_longitudinal_crypts():
    cfg = load_config(SMALL)
    tilts = [build_scene(cfg, s).section.tilt_deg for s in range(20)]
    assert min(tilts) < 20 and max(tilts) > 60


def test_numpy_layers_import_without_blender():
    import subprocess
    import sys

    code = ("import sys; sys.modules['bpy'] = None\n"
            "import arctique.scene, arctique.appearance, arctique.labels.exact, arctique.labels.noise\n"
            "import arctique.io.dataset, arctique.pipeline, arctique.vary, arctique.summary\n"
            "assert 'arctique.render' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
