"""A small real render: layout, dtypes, label contract, an independent label check, colours."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.ndimage import binary_dilation, median_filter

from arctique import classes
from arctique.compose import load_config
from arctique.io.dataset import Dataset, sample_files, slice_file
from arctique.labels.exact import tissue_classes, tissue_mask
from arctique.scene import load
from arctique.scene.cells import body_mesh, nucleus_mesh
from arctique.scene.model import EPITHELIUM, LUMEN, MUCIN, OUTSIDE, RIP, STROMA

from .conftest import NO_GPU_ENV, SMALL, render_small, run_cli

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
    """Nuclei never overlap, so along a pixel's column the 2D mask's nucleus comes before any other:
    wherever the stack's slices see it, it is the first nucleus they see (elsewhere it lies between
    the slab top and the first slice that hits)."""
    instance, stack = read(small_dataset, "instance"), read(small_dataset, "stack")
    hit = stack != 0
    first = np.where(hit.any(0), np.take_along_axis(stack, hit.argmax(0)[None], 0)[0], 0)
    seen = (instance > 0) & (stack == instance[None]).any(0)
    assert seen.sum() > 0.75 * (instance > 0).sum()  # the slices see most of the mask
    assert np.array_equal(first[seen], instance[seen])
    assert np.all(instance[first > 0] > 0)


def scene_meshes(root, mesh=nucleus_mesh):
    """BVH tree (mathutils) of the saved scene's nucleus meshes (or cell bodies: ``body_mesh``), the
    scene cell row of each face and the map from scene cell ids to label ids."""
    import bpy  # noqa: F401  (makes Blender's mathutils importable)
    from mathutils.bvhtree import BVHTree

    scene = load(root / sample_files(SEED)["scene"])
    verts, faces, rows = mesh(scene.cells, 2)
    to_new = {c["scene_cell_id"]: c["id"] for c in read(root, "metadata")["cells"]}
    return scene, BVHTree.FromPolygons(verts.tolist(), faces.tolist()), rows, to_new


def pixel_xy(size: int, mpp: float):
    """Section-frame (x, y) of pixel (r, c) centres: row 0 at +y, column 0 at -x."""
    for r in range(size):
        for c in range(size):
            yield r, c, (c - size / 2 + 0.5) * mpp, (size / 2 - 0.5 - r) * mpp


@pytest.mark.parametrize("key, mesh", [("instance", nucleus_mesh), ("cytoplasm", body_mesh)])
def test_first_hit_masks_match_independent_ray_casting(small_dataset, key, mesh):
    """BVH ray casts (mathutils) on the scene's own meshes give the same first-hit masks."""
    scene, tree, rows, to_new = scene_meshes(small_dataset, mesh)
    from mathutils import Vector
    s = scene.section
    expected = np.zeros((96, 96), np.int64)
    down = Vector((0.0, 0.0, -1.0))
    for r, c, x, y in pixel_xy(96, 1.0):
        loc, normal, face, _ = tree.ray_cast(Vector((x, y, s.z1)), down, 1e4)
        # A hit counts inside the slab, or on a back face: the ray started in that cell.
        if face is not None and (loc.z >= s.z0 or normal.dot(down) > 0):
            expected[r, c] = to_new.get(int(scene.cells.cell_id[rows[face]]), -1)
    agreement = np.mean(expected == read(small_dataset, key))
    assert agreement >= 0.999, agreement


def test_stack_slices_hold_the_nuclei_at_the_documented_depths(small_dataset):
    """Slice k samples depth z1 - (k + 1/2) * thickness / Z (centres of Z equal parts, camera side
    first): the metadata says so, and a point-in-mesh test there (the first face above a point inside
    a closed mesh is a back face) gives the slice."""
    scene, tree, rows, to_new = scene_meshes(small_dataset)
    from mathutils import Vector
    s, stack = scene.section, read(small_dataset, "stack")
    n_slices = stack.shape[0]
    depths = s.z1 - (s.z1 - s.z0) * (np.arange(n_slices) + 0.5) / n_slices
    assert np.allclose(read(small_dataset, "metadata")["sample"]["z_slices_um"], depths, atol=1e-5)
    up = Vector((0.0, 0.0, 1.0))
    expected = np.zeros_like(stack, np.int64)
    for k, z in enumerate(depths):
        for r, c, x, y in pixel_xy(96, 1.0):
            loc, normal, face, _ = tree.ray_cast(Vector((x, y, z)), up, 1e4)
            if face is not None and normal.dot(up) > 0:
                expected[k, r, c] = to_new.get(int(scene.cells.cell_id[rows[face]]), -1)
    # A quarter-slice error in depth changes about 1.5 % of the pixels of this sample.
    agreement = np.mean(expected == stack)
    assert agreement >= 0.999, agreement


def test_hematoxylin_marks_the_nuclei_and_the_brightest_pixels_are_unstained(small_dataset):
    from skimage.color import rgb2hed

    image, semantic = read(small_dataset, "image"), read(small_dataset, "semantic")
    h = rgb2hed(image)[..., 0]
    nuclei = semantic > 0
    assert h[nuclei].mean() > 3 * h[~nuclei].mean()
    # Nuclei are purple-blue (blue above green and red), the rest pink (red above green).
    mean_nuc, mean_rest = image[nuclei].mean(0), image[~nuclei].mean(0)
    assert mean_nuc[2] > mean_nuc[0] > mean_nuc[1]
    assert mean_rest[0] > mean_rest[1]
    # The brightest pixels lie where nothing but a little mucus takes up stain (glass, tears, lumens,
    # mucin; this field has no gut lumen, its tears are a pixel or two wide), or a pixel from there
    # (the scanner's blur), or in the interstitial spaces of the loose lamina propria, and they are
    # near white; but only the unstained places come near the glass. A 3 x 3 median takes out the
    # sensor noise.
    grey = median_filter(image.mean(2), 3)
    brightest = grey >= np.percentile(grey, 99.5)
    tissue = tifffile.imread(small_dataset / f"masks/tissue/{SEED}.tif")
    unstained = binary_dilation(np.isin(tissue, [OUTSIDE, RIP, LUMEN, MUCIN]))
    assert (unstained | (tissue == STROMA))[brightest].all() and unstained[brightest].any()
    assert grey[brightest].min() > 205
    assert grey[~unstained].max() < 240


# 96 um field at 0.5 um/px: seed 1 shows 23 nuclei within 1 um of the focal plane.
IN_FOCUS_SEED = 1
IN_FOCUS_FIELD = ("optics.image_size=192", "optics.mpp=0.5", "optics.samples=8")


def _in_focus(tmp_path_factory, *extra: str):
    """Image, instance mask and in-focus nuclei mask of a field with enough sharp nuclei to measure."""
    root = render_small(tmp_path_factory.mktemp("in_focus"), IN_FOCUS_SEED, extra=IN_FOCUS_FIELD + extra)
    cells = read(root, "metadata", IN_FOCUS_SEED)["cells"]
    instance = read(root, "instance", IN_FOCUS_SEED)
    sharp = [c["id"] for c in cells if abs(c["depth_to_focus_um"]) <= 1.0 and c["visible_area_px"] > 0]
    assert len(sharp) >= 20, len(sharp)
    return read(root, "image", IN_FOCUS_SEED), instance, cells, np.isin(instance, sharp)


@pytest.fixture(scope="module")
def in_focus_field(tmp_path_factory):
    return _in_focus(tmp_path_factory)


@pytest.fixture(scope="module")
def unshifted_field(tmp_path_factory):
    """The same field without the scanner's lateral chromatic aberration, which moves the red image
    against the green by design (here up to a fifth of a pixel, and so the hematoxylin channel)."""
    return _in_focus(tmp_path_factory, "scanner.lateral_ca_um=0")


def test_hematoxylin_channel_segments_the_in_focus_nuclei_as_in_real_colon(in_focus_field):
    """Otsu on the hematoxylin channel finds the nuclei near the focal plane about as well as it finds
    the annotated nuclei of real colon (three MoNuSeg colon tiles, measured the same way: Dice
    0.68-0.74): it marks the nuclei, and with them some basophilic cytoplasm, as in a real slide."""
    from arctique.labels.quality import in_focus_hematoxylin_dice

    image, instance, cells, _ = in_focus_field
    dice = in_focus_hematoxylin_dice(image, instance, cells)
    assert 0.6 <= dice <= 0.85, dice


def test_image_and_labels_are_aligned_to_the_pixel(unshifted_field):
    """The cross-correlation of the hematoxylin channel (colour deconvolution) with the in-focus nuclei
    mask peaks at zero shift, and its parabolic sub-pixel peak lies within a quarter pixel of it."""
    from skimage.color import rgb2hed

    image, _, _, sharp = unshifted_field
    h = rgb2hed(image)[..., 0]
    h, m = h - h.mean(), sharp - sharp.mean()
    reach = 3
    inner = (slice(reach, -reach),) * 2
    corr = np.array([[np.sum(np.roll(h, (dy, dx), (0, 1))[inner] * m[inner]) for dx in range(-reach, reach + 1)]
                     for dy in range(-reach, reach + 1)])
    peak = np.unravel_index(corr.argmax(), corr.shape)
    assert peak == (reach, reach), f"peak at shift {np.subtract(peak, reach)} (dy, dx)"
    for before, at, after in (corr[reach - 1:reach + 2, reach], corr[reach, reach - 1:reach + 2]):
        offset = 0.5 * (before - after) / (before - 2 * at + after)
        assert abs(offset) < 0.25, offset


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


# ----------------------------------------------------------------------------------------- devices


def test_backend_and_device_are_recorded_and_blender_output_is_logged(small_dataset):
    import bpy  # noqa: F401  (makes Cycles' own module importable)
    import _cycles

    cpu_name = _cycles.available_devices("CPU")[0][0]
    sample = read(small_dataset, "metadata")["sample"]
    assert (sample["render_backend"], sample["render_device"]) == ("CPU", cpu_name)
    row = Dataset(small_dataset).manifest()[0]
    assert (row["render_backend"], row["render_device"]) == ("CPU", cpu_name)
    logs = list((small_dataset / "logs").glob("blender_*.log"))
    assert len(logs) == 1 and "Fra:" in logs[0].read_text()  # Blender's progress lines


def test_the_device_that_renders_is_what_metadata_and_manifest_record(tmp_path, monkeypatch):
    """With the renderer's device selection replaced by a stand-in GPU (Cycles still renders on the
    CPU underneath), the sample's metadata and manifest row name that GPU, not the CPU."""
    from arctique.pipeline import run
    from arctique.render import blender
    from arctique.render.worker import RenderDevice

    real = blender.configure_device

    def stand_in_gpu(optics, log):
        real(optics, log)
        return RenderDevice("OPTIX", "Stand-in GPU 0")

    monkeypatch.setattr(blender, "configure_device", stand_in_gpu)
    counts = run(load_config([*SMALL, "optics.image_size=64", "seed=3", f"output.root={tmp_path / 'data'}"]), {},
                 progress=False)
    assert counts.failed == []
    sample = read(tmp_path / "data", "metadata", seed=3)["sample"]
    assert (sample["render_backend"], sample["render_device"]) == ("OPTIX", "Stand-in GPU 0")
    row = Dataset(tmp_path / "data").manifest()[0]
    assert (row["render_backend"], row["render_device"]) == ("OPTIX", "Stand-in GPU 0")


class FakeDevice:
    def __init__(self, name: str, kind: str, ident: str) -> None:
        self.name, self.type, self.id, self.use = name, kind, ident, kind != "CPU"


class FakeCyclesPreferences:
    """Cycles' add-on preferences on a machine with the GPUs ``found`` (backend -> device names);
    records which backends were probed."""

    def __init__(self, found, offered=("CUDA", "OPTIX", "HIP", "ONEAPI")) -> None:
        self.found, self.offered, self.probed, self.devices = found, offered, [], []
        self._type = "NONE"

    @property
    def compute_device_type(self) -> str:
        return self._type

    @compute_device_type.setter
    def compute_device_type(self, value: str) -> None:
        if value not in self.offered:
            raise TypeError(f'enum "{value}" not found')
        self._type = value

    def get_devices_for_type(self, kind: str):
        self.probed.append(kind)
        gpus = [FakeDevice(name, kind, f"{kind}_{k}") for k, name in enumerate(self.found.get(kind, []))]
        self.devices = gpus + [FakeDevice("CPU", "CPU", "CPU")]
        return self.devices if gpus else []


@pytest.fixture
def fresh_process(monkeypatch):
    """A process that has not chosen a GPU backend yet."""
    from arctique.render import blender

    monkeypatch.setattr(blender, "_auto_backend", {})
    return blender


def test_auto_backend_probes_in_order_then_keeps_its_choice(fresh_process):
    found = {"CUDA": ["GPU A", "GPU B"], "HIP": ["GPU C"]}
    first = FakeCyclesPreferences(found)
    backend, devices = fresh_process.choose_gpus(first, "auto", {})
    assert backend == "CUDA" and [d.name for d in devices] == ["GPU A"]  # one GPU unless told otherwise
    assert first.probed == ["OPTIX", "CUDA"]
    later = FakeCyclesPreferences(found)
    assert fresh_process.choose_gpus(later, "auto", {})[0] == "CUDA" and later.probed == ["CUDA"]


def test_visible_devices_variable_gives_the_job_every_gpu_it_names(fresh_process):
    prefs = FakeCyclesPreferences({"OPTIX": ["GPU A", "GPU B"]})
    _, devices = fresh_process.choose_gpus(prefs, "optix", {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [d.name for d in devices] == ["GPU A", "GPU B"]


def test_pinned_backend_is_the_only_one_probed_and_fails_clearly(fresh_process):
    prefs = FakeCyclesPreferences({"CUDA": ["GPU A"]}, offered=("CUDA", "OPTIX"))
    for backend in ("hip", "optix"):  # HIP: not in this build; OptiX: no device
        with pytest.raises(RuntimeError, match=f"no GPU for optics.gpu_backend={backend} .*use optics.device=cpu"):
            fresh_process.choose_gpus(prefs, backend, {"CUDA_VISIBLE_DEVICES": ""})
    assert prefs.probed == ["OPTIX"]
    assert fresh_process._auto_backend == {}


def test_gpu_request_without_a_gpu_stops_the_job_before_anything_is_written(tmp_path):
    proc = run_cli(tmp_path, "seed=2", *SMALL, "optics.device=gpu", check=False, env=NO_GPU_ENV)
    assert proc.returncode == 2
    assert "optics.device=gpu but Cycles finds no GPU" in proc.stderr and "CUDA_VISIBLE_DEVICES=''" in proc.stderr
    assert not (tmp_path / "rendered").exists()


def test_black_image_fails_the_sample(tmp_path, monkeypatch):
    """A device that returns nothing (an all-zero image) fails the sample instead of writing it."""
    from arctique.pipeline import run
    from arctique.render.blender import SceneRenderer

    real = SceneRenderer._render

    def nothing_from_the_device(self, workdir, name, socket):
        return np.zeros_like(real(self, workdir, name, socket))

    monkeypatch.setattr(SceneRenderer, "_render", nothing_from_the_device)
    cfg = load_config([*SMALL, "seed=3", f"output.root={tmp_path / 'data'}"])
    counts = run(cfg, {}, progress=False)
    dataset = Dataset(tmp_path / "data")
    assert counts.failed == [3] and dataset.completed() == set()
    error = dataset.failures()[3]["error"]
    assert "came back black" in error and "on CPU" in error and "logs/failed_3.log" in error
    assert "Fra:" in (tmp_path / "data/logs/failed_3.log").read_text()


CRASH_ON_SEED_3 = ("import os, sys\n"
                   "from arctique.commands.gen import main\n"
                   "from arctique.render.worker import Renderer\n"
                   "real = Renderer.build\n"
                   "def crash_on_seed_3(self, cfg, scene, *args):\n"
                   "    if scene.seed == 3:\n"
                   "        os._exit(139)  # as Blender on a segfault\n"
                   "    return real(self, cfg, scene, *args)\n"
                   "Renderer.build = crash_on_seed_3\n"
                   "main(sys.argv[1:])\n")


def test_blender_crash_fails_its_sample_and_the_job_goes_on(tmp_path):
    """Blender renders in a process of its own (``render.worker``): when it dies on a sample, that
    sample fails and a new Blender renders the next one. (A fresh process: the worker is forked
    only where Blender is not loaded yet, as it is in this one.)"""
    proc = subprocess.run([sys.executable, "-c", CRASH_ON_SEED_3, *SMALL, "seed=3", "n_samples=2", "output.root=data"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, "a job with a failed sample exits non-zero"
    dataset = Dataset(tmp_path / "data")
    assert dataset.completed() == {4}
    assert "Blender's process ended (exit code 139)" in dataset.failures()[3]["error"]


def _gpu_or_skip() -> None:
    import bpy

    from arctique.render.blender import choose_gpus

    try:
        choose_gpus(bpy.context.preferences.addons["cycles"].preferences, "auto", os.environ)
    except RuntimeError as exc:
        pytest.skip(f"no GPU here: {exc}")


@pytest.mark.gpu
def test_gpu_render_matches_the_cpu_render(tmp_path, small_dataset):
    """Same labels byte for byte, and an image within a small tolerance of the CPU's."""
    _gpu_or_skip()
    gpu = render_small(tmp_path, SEED, extra=("optics.device=gpu",))
    assert read(gpu, "metadata")["sample"]["render_backend"] in ("OPTIX", "CUDA", "HIP", "ONEAPI")
    for key in ("instance", "semantic", "cytoplasm", "stack"):
        assert (gpu / sample_files(SEED)[key]).read_bytes() == (small_dataset / sample_files(SEED)[key]).read_bytes(), key
    difference = np.abs(read(gpu, "image").astype(float) - read(small_dataset, "image"))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())


def _voronoi_f1(points: np.ndarray) -> np.ndarray:
    """F1 distance of Cycles' Voronoi texture (scale 1) at ``points``, from ``feature_points``."""
    from arctique.render.voronoi import feature_points

    offsets = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3)
    cells = (np.floor(points)[:, None, :] + offsets).reshape(-1, 3)
    features = feature_points(cells).reshape(len(points), 27, 3)
    return np.linalg.norm(features - points[:, None, :], axis=2).min(1)


def _cycles_scene(n: int, side: float, camera_at: tuple):
    """An empty Cycles scene rendering n x n px through an orthographic camera over ``side`` um,
    looking down from ``camera_at``, with the Standard view transform (factory settings first)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x = scene.render.resolution_y = n
    scene.view_settings.view_transform = "Standard"
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    camera.data.type, camera.data.ortho_scale = "ORTHO", side
    camera.location = camera_at
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene


def _rendered_exr(scene, path) -> np.ndarray:
    """Render ``scene`` to a 32-bit EXR at ``path`` and read it back, (n, n, 4), bottom row first;
    then back to factory settings, so no setting of the test reaches later renders."""
    import bpy

    scene.render.image_settings.file_format, scene.render.image_settings.color_depth = "OPEN_EXR", "32"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    n = image.size[0]
    pixels = np.empty(n * n * 4, np.float32)
    image.pixels.foreach_get(pixels)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return pixels.reshape(n, n, 4)


def test_voronoi_feature_points_are_those_cycles_renders(tmp_path):
    """Cycles' own Voronoi F1 distance, rendered on a plane far from the origin, equals the distance
    to the nearest numpy feature point at every pixel centre."""
    import bpy

    n, side, origin = 64, 6.0, np.array([300.3, 17.1, 5.55])
    scene = _cycles_scene(n, side, (side / 2, side / 2, 10))
    scene.cycles.samples, scene.cycles.use_denoising = 1, False
    scene.cycles.filter_width = 0.01  # every ray through its pixel's centre
    bpy.ops.mesh.primitive_plane_add(size=2 * side, location=(side / 2, side / 2, 0))
    material = bpy.data.materials.new("voronoi")
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    shift = nodes.new("ShaderNodeVectorMath")
    shift.inputs[1].default_value = tuple(origin)
    links.new(nodes.new("ShaderNodeNewGeometry").outputs["Position"], shift.inputs[0])
    voronoi = nodes.new("ShaderNodeTexVoronoi")
    voronoi.inputs["Scale"].default_value = 1.0
    links.new(shift.outputs[0], voronoi.inputs["Vector"])
    emission = nodes.new("ShaderNodeEmission")
    links.new(voronoi.outputs["Distance"], emission.inputs["Color"])
    links.new(emission.outputs[0], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    bpy.context.object.data.materials.append(material)
    scene.world = bpy.data.worlds.new("dark")
    rendered = _rendered_exr(scene, tmp_path / "voronoi.exr")[..., 0]  # bottom row first, as y grows
    centres = (np.arange(n) + 0.5) * side / n
    xx, yy = np.meshgrid(centres, centres)
    points = np.column_stack([xx.ravel(), yy.ravel(), np.zeros(n * n)]) + origin
    expected = _voronoi_f1(points).reshape(n, n)
    assert np.abs(rendered - expected).max() < 1e-3
    assert expected.min() < 0.1 and expected.max() > 0.5  # near feature points and far from them


def test_nucleolus_centres_are_every_nucleolus_in_the_inner_zone():
    """Inside the inner zone of random nuclei, a point is in a nucleolus of ``nucleolus_centres``
    exactly where the Voronoi texture the centres stand for is below the nucleolus radius."""
    from arctique.render.materials import (NUCLEOLUS_LATTICE_UM, NUCLEOLUS_RADIUS_UM, NUCLEOLUS_ZONE,
                                           nucleolus_centres)

    rng = np.random.default_rng(0)
    cells = 40
    offset = rng.uniform(0, 1000, (cells, 3))
    inv_axes = 1 / rng.uniform(1.5, 5.0, (cells, 3))
    centres = nucleolus_centres(offset, inv_axes)
    assert max(len(c) for c in centres) >= 3
    direction = rng.normal(size=(cells, 4000, 3))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    local = direction * NUCLEOLUS_ZONE * rng.uniform(0, 1, (cells, 4000, 1)) ** (1 / 3) / inv_axes[:, None, :]
    inside = 0
    for k in range(cells):
        distance = _voronoi_f1((local[k] + offset[k]) / NUCLEOLUS_LATTICE_UM) * NUCLEOLUS_LATTICE_UM
        near = np.linalg.norm(local[k][:, None, :] - centres[k][None], axis=2) < NUCLEOLUS_RADIUS_UM
        differ = (distance < NUCLEOLUS_RADIUS_UM) != near.any(1)
        assert np.all(np.abs(distance[differ] - NUCLEOLUS_RADIUS_UM) < 1e-4), k  # float rounding only
        inside += int(near.any(1).sum())
    assert inside > 0.03 * local.shape[0] * local.shape[1]


def test_a_sheet_in_the_focal_plane_is_its_texture_through_the_pixel_filter(tmp_path):
    """Cycles' render of a transparent sheet in the focal plane (the tissue material, a texture of
    white noise, depth of field on) is ``film.filtered`` of the texture at the pixel centres, and
    is far from the texture read at the centres alone: multiplying the sheet in after the render
    (``SceneRenderer.render_image``) gives the film Cycles would have made."""
    import bpy

    from arctique.render.blender import transmittance_image
    from arctique.render.film import PIXEL_FILTER_WIDTH_PX, filtered
    from arctique.render.materials import tissue_material

    n, margin, mpp = 48, 4, 0.5
    texture = np.random.default_rng(0).uniform(0.2, 1.0, (n + 2 * margin, n + 2 * margin, 3)).astype(np.float32)
    scene = _cycles_scene(n, n * mpp, (0, 0, 10))
    scene.cycles.samples, scene.cycles.use_denoising, scene.cycles.seed = 1024, False, 0
    scene.cycles.pixel_filter_type, scene.cycles.filter_width = "BLACKMAN_HARRIS", PIXEL_FILTER_WIDTH_PX
    dof = scene.camera.data.dof
    dof.use_dof, dof.focus_distance, dof.aperture_fstop = True, 10.0, 0.2
    half = (n + 2 * margin) * mpp / 2
    image = transmittance_image("sheet", texture)
    mesh = bpy.data.meshes.new("sheet")
    mesh.from_pydata([(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)])
    mesh.materials.append(tissue_material("sheet", image, half))
    scene.collection.objects.link(bpy.data.objects.new("sheet", mesh))
    world = bpy.data.worlds.new("white")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (1, 1, 1, 1)
    scene.world = world
    rendered = _rendered_exr(scene, tmp_path / "sheet.exr")[::-1, :, :3]
    inner = slice(margin, margin + n)
    film_error = np.abs(filtered(texture)[inner, inner] - rendered)
    centre_error = np.abs(texture[inner, inner] - rendered)
    assert film_error.mean() < 0.005 and film_error.max() < 0.05
    assert centre_error.mean() > 10 * film_error.mean()


# Renders a saved scene as it is (its compositor off) and prints the linear image as .npy bytes.
RENDER_SAVED_SCENE = """
import sys, numpy as np, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
print(sorted(o.name for o in scene.objects if o.name.startswith("tissue")), file=sys.stderr)
scene.use_nodes = False
scene.render.image_settings.file_format, scene.render.image_settings.color_depth = "OPEN_EXR", "32"
scene.render.filepath = sys.argv[2]
bpy.ops.render.render(write_still=True)
image = bpy.data.images.load(sys.argv[2])
pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
image.pixels.foreach_get(pixels)
np.save(sys.argv[3], pixels.reshape(image.size[1], image.size[0], 4)[::-1, :, :3])
"""


def test_a_saved_scene_holds_the_multiplied_sheet_and_renders_the_same_image(tmp_path):
    """``output.save_blend``: the .blend (saved by a job started in another working folder than
    $PWD) holds the tissue sheet that the render multiplied in, and Blender rendering the file as it
    is gives the sample's image."""
    from arctique.scanner import srgb_uint8

    run_cli(tmp_path, f"seed={SEED}", "optics.image_size=96", "optics.samples=64", "output.z_slices=2",
            "cells.mesh_subdivisions=2", "output.save_blend=true", "scanner=none")
    root = tmp_path / "rendered"
    done = subprocess.run([sys.executable, "-c", RENDER_SAVED_SCENE, str(root / f"scenes/{SEED}.blend"),
                           str(tmp_path / "again.exr"), str(tmp_path / "again.npy")],
                          capture_output=True, text=True, cwd=tmp_path, env=NO_GPU_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['tissue_0']" in done.stderr
    again = srgb_uint8(np.load(tmp_path / "again.npy")).astype(float)
    image = read(root, "image").astype(float)
    # Sampling noise at 64 samples, and where cells and matrix meet within the pixel filter's reach
    # (``render.film``): 0.7 grey levels RMSE here; a scene without its sheet is tens of levels brighter.
    assert np.sqrt(np.mean((again - image) ** 2)) < 1.5
    assert abs((again - image).mean()) < 0.4


def test_centroid_px_is_the_centre_of_a_fully_visible_nucleus_in_x_y(export_dataset):
    """``centroid_px`` (x = column, y = row) of nuclei the section does not cut, that nothing hides
    (one nucleus on every ray through them) and that touch no border lies at the mean of their pixels."""
    errors = []
    for seed in (3, 4, 5):
        instance = read(export_dataset, "instance", seed)
        overlap = tifffile.imread(export_dataset / f"masks/overlap/{seed}.tif")
        for c in read(export_dataset, "metadata", seed)["cells"]:
            pixels = instance == c["id"]
            if not pixels.any() or c["cut_top"] or c["cut_bottom"] or (overlap[pixels] != 1).any() \
                    or pixels[[0, -1]].any() or pixels[:, [0, -1]].any():
                continue
            rows, cols = np.nonzero(pixels)
            errors.append(np.hypot(cols.mean() - c["centroid_px"][0], rows.mean() - c["centroid_px"][1]))
    assert len(errors) >= 5 and max(errors) < 1.0, errors


def test_the_written_tissue_mask_is_the_saved_scene_evaluated_at_the_pixel_centres(small_dataset):
    """The tissue mask comes from the texture's compartments; evaluated independently from the saved
    scene model (``labels.exact.tissue_mask``) it is the same, code for code."""
    sample = read(small_dataset, "metadata")["sample"]
    scene = load(small_dataset / f"scenes/{SEED}.npz")
    expected = tissue_mask(scene, sample["image_size_px"], sample["mpp_um"])
    written = read(small_dataset, "tissue")
    assert len(np.unique(written)) >= 4
    assert np.array_equal(written, expected)


def test_mottle_sets_the_spread_of_uneven_eosin_uptake():
    """``stain.mottle`` is the relative spread of the eosin-uptake pattern (0: even) and
    ``stain.mottle_um`` its patch size: larger patches vary less between neighbouring pixels."""
    from arctique.appearance import matrix_patterns

    base = ["optics.image_size=96", "optics.mpp=0.5"]
    even = matrix_patterns(load_config(base + ["stain.mottle=0"]), SEED).mottle
    assert np.all(even == 1)
    for amount in (0.1, 0.3):
        mottle = matrix_patterns(load_config(base + [f"stain.mottle={amount}"]), SEED).mottle
        assert mottle.std() == pytest.approx(amount, rel=1e-6) and abs(mottle.mean() - 1) < amount
    steps = [np.abs(np.diff(matrix_patterns(load_config(base + [f"stain.mottle_um={um}"]), SEED).mottle, axis=-1)).mean()
             for um in (2.0, 8.0)]
    assert steps[1] < steps[0] / 2, steps


def _matrix_stain(cfg, scene, channel: int = 1) -> np.ndarray:
    """One stain of the tissue matrix (``appearance.tissue_textures``; 0 hematoxylin, 1 eosin) of
    ``scene`` under ``cfg``, and its compartment codes, on the texture grid."""
    from arctique.appearance import matrix_patterns, section_compartments, tissue_textures

    maps = section_compartments(scene, cfg.optics.image_size, cfg.optics.mpp, cfg.optics.layers)
    patterns = matrix_patterns(cfg, scene.seed)
    return tissue_textures(cfg, scene, lambda: patterns, lambda: maps)[..., channel], maps.codes


def test_fibre_bundling_gathers_fibres_into_bundles_and_leaves_the_other_patterns():
    """``stain.fibre_bundling`` varies the fibres' width over ``fibre_bundle_um``: the fibre share
    over windows of that size spreads more (thin fibrils beside thick bundles), the mean share stays
    within a fifth, and mottle, strands, grain and clearing do not move (the bundles have their own
    stream)."""
    from scipy.ndimage import uniform_filter

    from arctique.appearance import matrix_patterns

    base = ["optics.image_size=256", "optics.mpp=0.5", "stain.fibre_bundle_um=10"]
    plain = matrix_patterns(load_config(base + ["stain.fibre_bundling=0"]), SEED)
    spreads = []
    for amount in (0.0, 0.5, 1.0):
        patterns = matrix_patterns(load_config(base + [f"stain.fibre_bundling={amount}"]), SEED)
        for name in ("mottle", "strands", "grain", "clearing"):
            assert np.array_equal(getattr(patterns, name), getattr(plain, name)), name
        fibres = patterns.fibres[0]
        assert fibres.mean() == pytest.approx(plain.fibres.mean(), rel=0.2)
        spreads.append(uniform_filter(fibres, 20, mode="wrap").std() / fibres.mean())
    assert spreads[1] > 1.25 * spreads[0] and spreads[2] > 1.25 * spreads[1], spreads


def test_stroma_clearing_is_the_share_of_clear_matrix_in_spaces_of_clearing_um():
    """``stain.stroma_clearing`` is the share of the lamina propria's matrix in interstitial spaces
    (0: none), ``stain.clearing_um`` their size, ``stain.space_density`` the matrix left there (0:
    clear); the other matrix patterns do not move."""
    from arctique.appearance import matrix_patterns
    from arctique.scene import build_scene

    base = ["optics.image_size=256", "optics.mpp=0.5", "stain.clearing_um=3", "stain.space_density=0"]
    dense = matrix_patterns(load_config(base + ["stain.stroma_clearing=0"]), SEED)
    assert np.all(dense.clearing == 1)
    for share in (0.2, 0.5):
        loose = matrix_patterns(load_config(base + [f"stain.stroma_clearing={share}"]), SEED)
        assert (loose.clearing < 0.5).mean() == pytest.approx(share, abs=0.08)
        assert (loose.clearing < 0.1).mean() > 0.1 * share  # the spaces have clear cores, not a paler matrix
        assert np.array_equal(loose.mottle, dense.mottle) and np.array_equal(loose.fibres, dense.fibres)
    kept = matrix_patterns(load_config(base + ["stain.space_density=0.35"]), SEED).clearing
    assert kept.min() >= 0.35 - 1e-6 and kept.min() < 0.4  # the spaces keep that much matrix
    # In the rendered matrix, the lamina propria's eosin off the fibres follows the density.
    cfg = load_config([*SMALL, "stain.stroma_clearing=0.5", "stain.space_density=0", "stain.fibre_contrast=0",
                       "stain.cell_halo=0"])
    patterns = matrix_patterns(cfg, SEED)
    eosin, codes = _matrix_stain(cfg, build_scene(cfg, SEED))
    stroma = (codes == STROMA) & (eosin > 0)  # not displaced by a cell
    clear, dense = stroma & (patterns.clearing < 0.05), stroma & (patterns.clearing > 0.95)
    assert clear.sum() > 20 and dense.sum() > 20
    assert eosin[clear].mean() < 0.1 * eosin[dense].mean()
    sizes = []
    for um in (2.0, 8.0):
        clear = matrix_patterns(load_config(base + [f"stain.clearing_um={um}"]), SEED).clearing < 0.5
        sizes.append(clear.sum() / max(np.abs(np.diff(clear.astype(int), axis=-1)).sum(), 1))
    assert sizes[1] > 2 * sizes[0], sizes


def test_cell_halo_clears_the_matrix_next_to_stroma_cells_only():
    """``stain.cell_halo`` clears the lamina propria's matrix next to its cells (1: fully at the cell
    edge), over about ``stain.halo_um``; the matrix further away keeps its stain."""
    from scipy.ndimage import distance_transform_edt

    from arctique.appearance import cell_occupancy, texture_grid
    from arctique.scene import build_scene

    base = [*SMALL, "optics.mpp=0.5", "optics.image_size=160", "stain.stroma_clearing=0"]
    scene = build_scene(load_config(base), SEED)
    eosin = {}
    for halo in (0, 1):
        eosin[halo], codes = _matrix_stain(load_config(base + [f"stain.cell_halo={halo}", "stain.halo_um=1"]), scene)
    occupied = cell_occupancy(scene, texture_grid(scene.section.field_um, scene.section.margin_um, 0.5), 1)
    distance = distance_transform_edt(occupied[0] < 0.5, sampling=0.5)[None]
    matrix = (codes == STROMA) & (occupied == 0) & (eosin[0] > 0)
    ratio = eosin[1] / np.where(matrix, eosin[0], 1)
    near, far = matrix & (distance <= 0.5), matrix & (distance >= 3)
    assert near.sum() > 50 and far.sum() > 50
    assert ratio[near].mean() < 0.4 and np.allclose(ratio[far], 1, atol=1e-3)


def test_mucin_edge_stains_a_thecas_rim_and_leaves_its_middle_clear():
    """``stain.mucin_edge`` stains goblet mucin at a theca's edge like ``goblet_clarity`` 0 would,
    fading over about ``mucin_edge_um`` to the clear middle; 0 keeps the mucin even (bar its mesh)."""
    from scipy.ndimage import distance_transform_edt

    from arctique.scene import build_scene

    base = [*SMALL, "optics.mpp=0.25", "optics.image_size=256", "stain.mucin_edge_um=0.8"]
    scene = build_scene(load_config(base), SEED)
    eosin = {}
    for edge in (0.0, 1.0):
        eosin[edge], codes = _matrix_stain(load_config(base + [f"stain.mucin_edge={edge}"]), scene)
    mucin = codes == MUCIN
    depth = np.stack([distance_transform_edt(layer, sampling=0.25) for layer in mucin])
    rim, middle = mucin & (depth <= 0.25), mucin & (depth >= 3)
    assert rim.sum() > 50 and middle.sum() > 50
    clarity = load_config(base).stain.goblet_clarity
    gain = eosin[1.0] / np.where(mucin & (eosin[0.0] > 0), eosin[0.0], 1)
    # at the edge the residue rises from 1 - clarity towards 1; in the middle it stays
    assert gain[rim].mean() > 0.6 / (1 - clarity)
    assert np.allclose(gain[middle], 1, atol=0.05 / (1 - clarity))


def test_basal_hematoxylin_darkens_epithelial_cytoplasm_at_the_basement_only():
    """``stain.basal_hematoxylin`` adds hematoxylin to epithelial cytoplasm by the basement, fading
    as exp(-distance / ``basal_um``); stroma and apical cytoplasm keep theirs."""
    from scipy.ndimage import distance_transform_edt

    from arctique.scene import build_scene

    base = [*SMALL, "optics.mpp=0.5", "optics.image_size=160", "stain.basal_um=3", "stain.grain=0"]
    scene = build_scene(load_config(base), SEED)
    h = {}
    for extra in (0.0, 0.3):
        h[extra], codes = _matrix_stain(load_config(base + [f"stain.basal_hematoxylin={extra}"]), scene, 0)
    epithelium = codes == EPITHELIUM
    depth = np.stack([distance_transform_edt(layer != STROMA, sampling=0.5) for layer in codes])
    basal, apical = epithelium & (depth <= 0.5) & (h[0.0] > 0), epithelium & (depth >= 15) & (h[0.0] > 0)
    assert basal.sum() > 50 and apical.sum() > 50
    # relative to the plain cytoplasm, so that the field's uptake and the cells' share cancel
    plain = load_config(base).stain.epithelium_hematoxylin
    added = (h[0.3] - h[0.0]) / np.where(epithelium & (h[0.0] > 0), h[0.0], 1) * plain
    assert np.allclose(added[basal], 0.3 * np.exp(-depth[basal] / 3), rtol=0.02)
    assert added[apical].max() <= 0.3 * np.exp(-5) * 1.02
    assert np.array_equal(h[0.3][~epithelium], h[0.0][~epithelium])


def test_stain_uptake_varies_smoothly_across_the_field():
    """``stain.field_variation`` scales every cell's stains by one smooth field of the sample: cells
    near each other share their factor, distant cells differ; 0 leaves every cell as it was."""
    from scipy.spatial.distance import pdist

    from arctique.appearance import cell_stains
    from arctique.scene import build_scene

    base = ["stain.field_variation_um=40"]
    even_cfg, varied_cfg = (load_config(base + [f"stain.field_variation={v}"]) for v in (0.0, 0.5))
    scene = build_scene(even_cfg, SEED)
    even, varied = cell_stains(even_cfg, scene), cell_stains(varied_cfg, scene)
    factor = np.log(varied.nucleus["h_conc"] / even.nucleus["h_conc"])
    stained = even.body["e_conc"] > 0  # epithelial cells take their cytoplasm's eosin from the matrix
    assert stained.sum() > 50
    assert np.allclose(np.log(varied.body["e_conc"][stained] / even.body["e_conc"][stained]), factor[stained])
    distance, step = pdist(scene.cells.centre[:, :2]), pdist(factor[:, None])
    assert step[distance < 3].mean() < 0.25 * step[distance > 30].mean()
    assert factor.std() > 0.2
    assert np.array_equal(even.nucleus["chromatin"], varied.nucleus["chromatin"])  # one stream each: nothing else moves
