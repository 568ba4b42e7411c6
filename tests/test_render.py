"""A small real render: layout, dtypes, label contract, an independent label check, colours."""

from __future__ import annotations

import json

import numpy as np
import tifffile
from PIL import Image

from arctique import classes
from arctique.compose import load_config
from arctique.io.dataset import sample_files, slice_file
from arctique.labels.exact import tissue_classes
from arctique.scene import load
from arctique.scene.cells import nucleus_mesh

from .conftest import SMALL, render_small

SEED = 3


def read(root, key, seed=SEED):
    path = root / sample_files(seed)[key]
    if path.suffix == ".tif":
        return tifffile.imread(path)
    if path.suffix == ".png":
        return np.asarray(Image.open(path))
    if path.suffix == ".npy":
        return np.load(path)
    return json.loads(path.read_text())


def test_layout_and_dtypes(small_dataset):
    root = small_dataset
    for key, rel in sample_files(SEED).items():
        assert (root / rel).is_file(), rel
    image = read(root, "image")
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    for key in ("instance", "cytoplasm"):
        assert read(root, key).dtype == np.uint16 and read(root, key).shape == (96, 96)
    assert read(root, "semantic").dtype == np.uint8
    tissue = read(root, "tissue")
    assert tissue.dtype == np.uint8 and tissue.shape == read(root, "instance").shape
    table = read(root, "metadata")["sample"]["tissue_classes"]
    assert table == tissue_classes() and set(np.unique(tissue).astype(str)) <= set(table)
    stack = read(root, "stack")
    assert stack.shape == (4, 96, 96) and stack.dtype == np.uint16
    for k in range(4):
        assert np.array_equal(tifffile.imread(root / slice_file(SEED, k)), stack[k])
    with tifffile.TiffFile(root / sample_files(SEED)["instance"]) as tif:
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == 1e4 / 1.0  # pixels per cm at 1 um/px
    manifest = (root / "manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("index,") and manifest[1].startswith(f"{SEED},")
    assert not any((root / ".staging").iterdir())


def test_label_contract(small_dataset):
    root = small_dataset
    instance, semantic, cytoplasm, stack = (read(root, k) for k in ("instance", "semantic", "cytoplasm", "stack"))
    meta = read(root, "metadata")
    present = np.union1d(np.union1d(np.unique(instance), np.unique(cytoplasm)), np.unique(stack))
    present = present[present > 0]
    n = len(meta["cells"])
    assert n > 20
    assert np.array_equal(present, np.arange(1, n + 1)), "ids are 1..N, contiguous"
    assert [c["id"] for c in meta["cells"]] == list(range(1, n + 1))
    class_of = np.zeros(n + 1, np.uint8)
    class_of[1:] = [c["class_id"] for c in meta["cells"]]
    assert np.array_equal(semantic, class_of[instance]), "semantic == class(instance)"
    areas = np.bincount(instance.ravel(), minlength=n + 1)
    assert [c["visible_area_px"] for c in meta["cells"]] == areas[1:].tolist()
    assert set(np.unique(semantic)) <= {0, *classes.CLASS_IDS.values()}
    assert meta["sample"]["class_table"] == classes.class_table()
    assert all(c["class_name"] == classes.CLASS_NAMES[c["class_id"]] for c in meta["cells"])
    assert meta["sample"]["mpp_um"] == 1.0 and len(meta["sample"]["z_slices_um"]) == 4


def test_first_hit_along_z_matches_the_2d_mask(small_dataset):
    instance, stack = read(small_dataset, "instance"), read(small_dataset, "stack")
    hit = stack != 0
    first = np.where(hit.any(0), np.take_along_axis(stack, hit.argmax(0)[None], 0)[0], 0)
    both = (first > 0) & (instance > 0)
    # Slices sample the slab at 4 depths: where the stack sees a nucleus, the mask agrees.
    assert np.mean(first[both] == instance[both]) > 0.97
    assert np.all(instance[first > 0] > 0)


def test_instance_mask_matches_independent_ray_casting(small_dataset):
    """BVH ray casts (mathutils) on the scene's own meshes give the same first-hit mask."""
    import bpy  # noqa: F401  (makes Blender's mathutils importable)
    from mathutils import Vector
    from mathutils.bvhtree import BVHTree

    root = small_dataset
    scene = load(root / sample_files(SEED)["scene"])
    meta = read(root, "metadata")
    verts, faces, rows = nucleus_mesh(scene.cells, 2)
    tree = BVHTree.FromPolygons(verts.tolist(), faces.tolist())
    to_new = {c["scene_cell_id"]: c["id"] for c in meta["cells"]}
    s = scene.section
    size, mpp = 96, 1.0
    expected = np.zeros((size, size), np.int64)
    down = Vector((0.0, 0.0, -1.0))
    for r in range(size):
        y = (size / 2 - 0.5 - r) * mpp
        for c in range(size):
            x = (c - size / 2 + 0.5) * mpp
            loc, normal, face, _ = tree.ray_cast(Vector((x, y, s.z1)), down, 1e4)
            # A hit counts inside the slab, or on a back face: the ray started in that nucleus.
            if face is not None and (loc.z >= s.z0 or normal.dot(down) > 0):
                expected[r, c] = to_new.get(int(scene.cells.cell_id[rows[face]]), -1)
    agreement = np.mean(expected == read(root, "instance"))
    assert agreement >= 0.999, agreement


def test_hematoxylin_marks_the_nuclei_and_glass_is_white(small_dataset):
    from skimage.color import rgb2hed

    image, semantic = read(small_dataset, "image"), read(small_dataset, "semantic")
    h = rgb2hed(image)[..., 0]
    nuclei = semantic > 0
    assert h[nuclei].mean() > 3 * h[~nuclei].mean()
    # Nuclei are purple-blue (blue above green and red), the rest pink (red above green).
    mean_nuc, mean_rest = image[nuclei].mean(0), image[~nuclei].mean(0)
    assert mean_nuc[2] > mean_nuc[0] > mean_nuc[1]
    assert mean_rest[0] > mean_rest[1]
    # The brightest pixels are empty glass: near white.
    assert np.percentile(image.mean(2), 99.5) > 225


def test_hematoxylin_channel_segments_the_in_focus_nuclei(tmp_path):
    """At 40x (0.25 um/px) Otsu on the hematoxylin channel finds the nuclei near the focal plane."""
    from arctique.labels.quality import in_focus_hematoxylin_dice

    root = render_small(tmp_path, 1, extra=("optics.mpp=0.25", "optics.image_size=160", "optics.samples=16",
                                            "cells.mesh_subdivisions=3"))
    cells = read(root, "metadata", 1)["cells"]
    dice = in_focus_hematoxylin_dice(read(root, "image", 1), read(root, "instance", 1), cells)
    assert dice >= 0.8, dice


def test_same_seed_is_byte_identical_and_appearance_keeps_labels(tmp_path, small_dataset):
    lym = load_config(list(SMALL)).cells.types.LYM
    other = render_small(tmp_path, SEED, extra=("nuclei.intensity=0.2", "optics.samples=2",
                                                f"cells.types.LYM.hematoxylin={lym.hematoxylin / 2}",
                                                f"cells.types.LYM.chromatin={lym.chromatin / 2}"))
    for key in ("instance", "semantic", "cytoplasm", "tissue", "stack", "scene"):
        a = (small_dataset / sample_files(SEED)[key]).read_bytes()
        b = (other / sample_files(SEED)[key]).read_bytes()
        assert a == b, key
    assert not np.array_equal(read(small_dataset, "image"), read(other, "image"))
    # Paler nuclei: brighter where the labels say nucleus.
    nuclei = read(small_dataset, "semantic") > 0
    assert read(other, "image")[nuclei].mean() > read(small_dataset, "image")[nuclei].mean()


def test_rendering_twice_gives_identical_labels_and_metadata(tmp_path, small_dataset):
    again = render_small(tmp_path, SEED)
    for key in ("instance", "semantic", "cytoplasm", "tissue", "stack", "metadata", "scene", "image"):
        a = (small_dataset / sample_files(SEED)[key]).read_bytes()
        b = (again / sample_files(SEED)[key]).read_bytes()
        if key == "metadata":
            a, b = json.loads(a), json.loads(b)
        assert a == b, key


def test_config_used_by_the_small_render_validates():
    load_config(list(SMALL))
