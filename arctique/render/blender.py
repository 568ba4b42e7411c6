"""Build a scene model in Blender and render the H&E image.

Units: 1 Blender unit = 1 micrometre. The camera looks down -z, orthographic, over the field. The
labels are traced in numpy through the same meshes (``arctique.labels.trace``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

from ..appearance import CellStains, layer_depths, layer_transmittance, od_vectors
from ..config import ArctiqueConf, OpticsConf
from ..io.dataset import short_write
from ..labels.trace import Mesh
from ..scene.geometry import clip_to_slab, icosphere
from ..scene.model import SceneModel
from . import materials
from ._bpy import bpy
from .film import PIXEL_FILTER_WIDTH_PX, filtered
from .worker import RenderDevice
from mathutils import Matrix  # noqa: E402  (importable once bpy is)

logger = logging.getLogger(__name__)

CAMERA_HEIGHT_UM = 50.0  # camera distance above the top of the slab
# Depth step between the caps of overlapping cell shells cut to the slab: well above float32
# resolution at scene depths (~1e-5 um), far below anything visible.
CAP_STAGGER_UM = 2e-4
TRANSPARENT_CROSSINGS = 64  # volume boundaries a ray may cross (nuclei, lobes, cell bodies)
FOCAL_PLANE_TOLERANCE_UM = 1e-6  # a tissue sheet this near the focal plane is sharp (``film``)


def reset() -> None:
    """Remove every object and data block, those of Blender's start-up file or of a previous sample,
    so that nothing carries over: every setting a sample depends on is set for each sample anew.
    All in one call: removed one by one, a default sample's blocks took 0.3-0.45 s, in one batch
    0.04 s (Blender's factory reset takes a quarter of a second)."""
    bpy.data.batch_remove([block for collection in (bpy.data.objects, bpy.data.meshes, bpy.data.materials,
                                                    bpy.data.images, bpy.data.cameras, bpy.data.lights,
                                                    bpy.data.worlds)
                           for block in collection])


def transmittance_image(name: str, transmittance: np.ndarray) -> "bpy.types.Image":
    """A float image of an (H, W, 3) transmittance whose rows run from the top, as a shader reads
    it: linear values, rows flipped (Blender images start at the bottom row)."""
    h, w, _ = transmittance.shape
    image = bpy.data.images.new(name, w, h, alpha=True, float_buffer=True)
    image.colorspace_settings.name = "Non-Color"
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = transmittance[::-1]
    image.pixels.foreach_set(rgba.ravel())
    return image


# optics.gpu_backend=auto tries these Cycles backends in this order (Metal is macOS only).
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI")
# Variables by which a scheduler (SLURM sets CUDA_VISIBLE_DEVICES per job) or the user names the GPUs
# a job may use; without any of them a job renders on the first GPU only.
VISIBLE_DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                            "ONEAPI_DEVICE_SELECTOR")
_auto_backend: Dict[str, str] = {}  # the backend optics.gpu_backend=auto chose in this process


def blender_log(cfg: ArctiqueConf) -> Path:
    """This job's file for Blender's own output (progress, device and kernel messages) of the sample
    in progress; a sample that fails keeps a copy (``SceneRenderer.failure``)."""
    return Path(cfg.output.root) / "logs" / f"blender_{socket.gethostname()}_{os.getpid()}.log"


@contextmanager
def blender_output_to(log: Path, heading: str, start: bool = False) -> Iterator[None]:
    """Send what Blender's C code writes to file descriptors 1 and 2 (a progress line per object and
    render step, a 'Saved:' line per file, device and kernel errors) to ``log``, after a heading line,
    and keep it out of the job's own output; ``start`` empties the log first (a new sample)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if start else os.O_APPEND), 0o644)
    os.write(target, f"--- {heading}\n".encode())
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def gpu_devices(prefs, backend: str) -> list:
    """The devices Cycles finds for one backend, probing that backend only; [] when this Cycles
    build lacks the backend or it finds none."""
    try:
        prefs.compute_device_type = backend
    except TypeError:  # not among the backends this build of Cycles offers
        return []
    return [d for d in prefs.get_devices_for_type(backend) if d.type == backend]


def choose_gpus(prefs, gpu_backend: str, environ: Mapping[str, str]) -> Tuple[str, list]:
    """The backend and devices to render on. A named backend is used or fails; ``auto`` probes the
    backends in turn until one finds a device, then keeps it for the rest of the process (one job
    never mixes backends). Without a visible-device variable in ``environ`` only the first device
    is used."""
    pinned = gpu_backend.upper() if gpu_backend != "auto" else _auto_backend.get("backend")
    for backend in (pinned,) if pinned else GPU_BACKENDS:
        devices = gpu_devices(prefs, backend)
        if devices:
            break
    else:
        tried = pinned or ", ".join(GPU_BACKENDS)
        visible = ", ".join(f"{v}={environ[v]!r}" for v in VISIBLE_DEVICE_VARIABLES if v in environ)
        raise RuntimeError(f"optics.device=gpu but Cycles finds no GPU for optics.gpu_backend={gpu_backend} "
                           f"(tried {tried}{'; ' + visible if visible else ''}); use optics.device=cpu")
    if gpu_backend == "auto":
        _auto_backend["backend"] = backend
    if not any(environ.get(v) for v in VISIBLE_DEVICE_VARIABLES):
        devices = devices[:1]
    return backend, devices


def configure_device(optics: OpticsConf, log: Path) -> RenderDevice:
    """Select the CPU or a GPU backend and its devices; a clear error when a GPU is asked for and absent."""
    scene = bpy.context.scene
    scene.render.threads_mode = "FIXED" if optics.threads else "AUTO"
    if optics.threads:
        scene.render.threads = optics.threads
    prefs = bpy.context.preferences.addons["cycles"].preferences
    with blender_output_to(log, f"devices ({optics.device}, gpu_backend={optics.gpu_backend})", start=True):
        if optics.device == "cpu":
            scene.cycles.device = "CPU"
            return RenderDevice("CPU", ", ".join(d.name for d in prefs.get_devices_for_type("CPU")))
        first_choice = optics.gpu_backend == "auto" and not _auto_backend
        backend, devices = choose_gpus(prefs, optics.gpu_backend, os.environ)
    if first_choice:
        logger.info("optics.gpu_backend=auto chose %s (%s); this job keeps it", backend,
                    ", ".join(d.name for d in devices))
    chosen = {(d.type, d.id) for d in devices}
    for d in prefs.devices:
        d.use = (d.type, d.id) in chosen
    scene.cycles.device = "GPU"
    return RenderDevice(backend, ", ".join(d.name for d in devices))


class SceneRenderer:
    """Turns one scene model into the H&E image: the cells on construction, the tissue matrix
    (whose texture may still be being made then) in ``render_image``.

    The Blender state is reset on construction, so every sample starts from an empty file.
    """

    composite_focal_sheets = True  # off: Cycles traces every sheet (the reference ``film`` is checked against)

    def __init__(self, cfg: ArctiqueConf, scene: SceneModel, stains: CellStains, nuclei: Mesh, bodies: Mesh) -> None:
        self.cfg, self.model, self.optics = cfg, scene, cfg.optics
        reset()
        self.bscene = bpy.context.scene
        self.log = blender_log(cfg)
        try:
            self.device = configure_device(self.optics, self.log)
        except RuntimeError as exc:
            raise self.failure(str(exc)) from exc
        self._setup_cycles()
        self.camera = self._camera()
        self.composited: List[Tuple[int, float, np.ndarray]] = []  # (layer, z, transmittance) of render_image
        self.od = od = od_vectors(cfg.stain)
        step, level = self.optics.volume_step_rate, cfg.cells.mesh_subdivisions
        nucleoli = materials.nucleolus_centres(stains.nucleus["texture_offset"], stains.nucleus["inv_axes"])
        # A nucleus that no nucleolus reaches gets the variant without the nucleolus nodes.
        reached = np.array([len(spots) > 0 for spots in nucleoli], bool)
        nucleus = {**stains.nucleus, "nucleoli": stains.nucleus["nucleoli"] * reached}
        self.nuclei = self._cells("nucleus", self._in_slab(nuclei, level, phase=0), nucleus,
                                  materials.NUCLEUS_AMOUNTS, materials.NUCLEUS_FEATURES,
                                  lambda features, spots: materials.nucleus_material(
                                      od, cfg.nuclei.chromatin_scale_um, cfg.nuclei.nucleoplasm_floor, step,
                                      features, spots), nucleoli)
        self.bodies = self._cells("body", self._in_slab(bodies, level, phase=1),
                                  stains.body,
                                  materials.BODY_AMOUNTS, materials.BODY_FEATURES,
                                  lambda features, _: materials.body_material(od, step, features))

    def failure(self, message: str) -> RuntimeError:
        """An error for this sample that names a kept copy of Blender's output for it."""
        kept = self.log.with_name(f"failed_{self.model.seed}.log")
        shutil.copyfile(self.log, kept)
        return RuntimeError(f"{message}; Blender's output is in {kept}")

    # ------------------------------------------------------------------------------- setup

    def _setup_cycles(self) -> None:
        s = self.bscene
        s.render.engine = "CYCLES"
        s.render.resolution_x = s.render.resolution_y = self.optics.image_size
        s.render.resolution_percentage = 100
        s.render.film_transparent = False
        c = s.cycles
        c.seed = 0
        c.use_animated_seed = False
        c.use_adaptive_sampling = False
        c.use_denoising = False
        c.denoiser = "OPENIMAGEDENOISE"
        c.denoising_input_passes = "RGB"  # albedo and normals mean nothing in a pure absorber
        # Pure absorption: the only light is the back-light seen straight through the volumes.
        c.max_bounces = c.volume_bounces = c.diffuse_bounces = c.glossy_bounces = 0
        c.transmission_bounces = 0
        # Every tissue sheet and every crossing of a cell volume boundary is a transparent bounce;
        # a ray that runs out of them comes back black.
        c.transparent_max_bounces = self.optics.layers + TRANSPARENT_CROSSINGS
        c.use_light_tree = False
        c.volume_max_steps = 1024
        s.view_settings.view_transform = "Standard"
        s.view_settings.look = "None"
        s.view_settings.exposure = 0.0
        s.view_settings.gamma = 1.0
        world = bpy.data.worlds.new("backlight")
        world.use_nodes = True
        bg = world.node_tree.nodes["Background"]
        w = self.optics.white_level
        bg.inputs["Color"].default_value = (w, w, w, 1.0)
        bg.inputs["Strength"].default_value = 1.0
        world.cycles.sampling_method = "NONE"
        s.world = world

    def _camera(self) -> "bpy.types.Object":
        sec = self.model.section
        cam = bpy.data.cameras.new("camera")
        cam.type = "ORTHO"
        cam.ortho_scale = sec.field_um
        obj = bpy.data.objects.new("camera", cam)
        obj.location = (0.0, 0.0, sec.z1 + CAMERA_HEIGHT_UM)
        self.bscene.collection.objects.link(obj)
        self.bscene.camera = obj
        return obj

    def _link(self, name: str, verts: np.ndarray, faces: np.ndarray, location=(0.0, 0.0, 0.0),
              rotation: np.ndarray = np.eye(3)):
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(len(verts))
        mesh.loops.add(faces.size)
        mesh.polygons.add(len(faces))
        # Written as the mesh's attribute arrays: MeshLoop.vertex_index is set corner by corner, about
        # a hundred times slower (0.4 s for a default sample's cells).
        mesh.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(verts, np.float32).ravel())
        mesh.attributes[".corner_vert"].data.foreach_set("value", np.ascontiguousarray(faces, np.int32).ravel())
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update()
        obj = bpy.data.objects.new(name, mesh)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, location
        obj.matrix_world = Matrix(pose.tolist())  # a Matrix is built from its rows
        self.bscene.collection.objects.link(obj)
        return obj

    def _in_slab(self, mesh: Mesh, level: int, phase: int) -> Mesh:
        """The cell shells (icospheres of subdivision ``level``) cut to the slab: nothing outside the
        section absorbs, and a ray spends no volume step there. Caps are staggered (nuclei at even,
        cell bodies at odd steps of CAP_STAGGER_UM, at most 0.013 um outside the slab)."""
        sec = self.model.section
        return clip_to_slab(*mesh, len(icosphere(level)[1]), sec.z0, sec.z1, CAP_STAGGER_UM, phase)

    def _cells(self, part: str, mesh: Mesh, properties: Dict[str, np.ndarray], amounts: Tuple[str, ...],
               features: Tuple[str, ...], material: Callable[[FrozenSet[str], int], "bpy.types.Material"],
               nucleoli: Sequence[np.ndarray] = ()) -> List["bpy.types.Object"]:
        """One object per cell (volume shaders see object data, not face attributes), posed in the
        cell's frame: its four scalar ``amounts`` in the object colour, its vectors as object
        properties, the local centres of its ``nucleoli`` (per cell) as ``nucleolus_<j>``, and the
        material variant with the ``features`` whose amount it has and that many nucleoli."""
        cells = self.model.cells
        verts, faces, rows = mesh
        objects = []
        variants: Dict[Tuple[FrozenSet[str], int], "bpy.types.Material"] = {}
        order = np.argsort(rows, kind="stable")
        faces, rows = faces[order], rows[order]
        bounds = np.searchsorted(rows, np.arange(len(cells) + 1))
        vectors = [key for key, values in properties.items() if np.ndim(values) == 2]
        for row in range(len(cells)):
            f = faces[bounds[row]:bounds[row + 1]]
            if len(f) == 0:
                continue
            used, local = np.unique(f, return_inverse=True)
            centre, rotation = cells.centre[row], cells.rotation[row]
            # Row vectors: (p - centre) @ rotation are the coordinates in the cell's frame.
            obj = self._link(f"{part}_{cells.cell_id[row]:06d}", (verts[used] - centre) @ rotation,
                             local.reshape(-1, 3), centre, rotation)
            obj.color = [float(properties[key][row]) for key in amounts]
            for key in vectors:
                obj[key] = tuple(float(v) for v in properties[key][row])
            has = frozenset(key for key in features if properties[key][row] > 0)
            spots = nucleoli[row] if "nucleoli" in has else ()
            for j, spot in enumerate(spots):
                obj[f"nucleolus_{j}"] = tuple(float(v) for v in spot)
            variant = (has, len(spots))
            if variant not in variants:
                variants[variant] = material(*variant)
            obj.data.materials.append(variants[variant])
            objects.append(obj)
        return objects

    def _sheet(self, k: int, z: float, transmittance: np.ndarray) -> "bpy.types.Object":
        """Depth layer ``k`` of the matrix: a transparent sheet at ``z`` carrying its (H, W, 3) transmittance."""
        half = transmittance.shape[1] * self.optics.mpp / 2  # appearance.texture_grid
        image = transmittance_image(f"tissue_{k}", transmittance)
        image.pack()
        corners = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
        obj = self._link(f"tissue_{k}", corners, np.array([[0, 1, 2], [0, 2, 3]]))
        obj.data.materials.append(materials.tissue_material(f"tissue_{k}", image, half))
        return obj

    # ------------------------------------------------------------------------------ passes

    def _render(self, workdir: Path, name: str, socket: str) -> np.ndarray:
        """Render and return ``socket`` of the render layer as a float32 (H, W, 4) array, top row first."""
        s = self.bscene
        s.use_nodes = True
        tree = s.node_tree
        tree.nodes.clear()
        layer = tree.nodes.new("CompositorNodeRLayers")
        out = tree.nodes.new("CompositorNodeOutputFile")
        out.base_path = str(workdir)
        out.format.file_format = "OPEN_EXR"
        out.format.color_depth = "32"
        out.format.color_mode = "RGBA"
        out.format.exr_codec = "NONE"  # read back at once: ZIP costs 0.04 s per 512 x 512 image (README, Speed)
        out.file_slots[0].path = f"{name}_"
        tree.links.new(layer.outputs[socket], out.inputs[0])
        s.render.filepath = str(workdir / "discard_")
        with blender_output_to(self.log, f"sample {self.model.seed}: {name} pass on {self.device.backend}"):
            try:
                bpy.ops.render.render(write_still=False)
            except RuntimeError as exc:
                raise self.failure(str(exc)) from exc
            path = workdir / f"{name}_{s.frame_current:04d}.exr"
            image = bpy.data.images.load(str(path))
            image.colorspace_settings.name = "Non-Color"
            w, h = image.size  # read here, so that the log says why a file cannot be read
        if not w * h:  # Blender cut its file short, and read nothing back
            bpy.data.images.remove(image)
            raise short_write(path, s.render.resolution_x * s.render.resolution_y * 4 * 4)
        px = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(px)
        bpy.data.images.remove(image)
        path.unlink()
        return px.reshape(h, w, 4)[::-1]

    def render_image(self, workdir: Path, textures: np.ndarray) -> np.ndarray:
        """Linear transmittance image, (H, W, 3) float32 in [0, 1], with the tissue matrix of
        ``textures`` (``appearance.tissue_textures``): its depth layers in the focal plane are
        multiplied in after the render (``film``, unless ``composite_focal_sheets`` is off), the
        others are sheets in the scene."""
        sec, o = self.model.section, self.optics
        transmittance = layer_transmittance(textures, self.od, sec.thickness)
        focus_z = (sec.z0 + sec.z1) / 2 + o.focus_offset_um
        depths = layer_depths(self.model.section, len(transmittance))
        sharp = (np.abs(depths - focus_z) < FOCAL_PLANE_TOLERANCE_UM) & self.composite_focal_sheets
        self.composited = [(k, depths[k], transmittance[k]) for k in np.flatnonzero(sharp)]
        for k in np.flatnonzero(~sharp):
            self._sheet(k, depths[k], transmittance[k])
        cam = self.camera.data
        cam.clip_start, cam.clip_end = 0.1, 10 * (CAMERA_HEIGHT_UM + sec.thickness) + 1000
        cam.dof.use_dof = o.aperture > 0
        if o.aperture > 0:
            distance = self.camera.location.z - focus_z
            cam.dof.focus_distance = distance
            # Cycles' orthographic aperture radius is 1 / (2 f-stop) scene units; the blur radius
            # per unit of defocus is then that radius / focus distance.
            cam.dof.aperture_fstop = 1.0 / (2.0 * o.aperture * distance)
        c = self.bscene.cycles
        c.samples = o.samples
        c.use_denoising = o.denoise
        c.denoising_quality = o.denoise_quality.upper()
        c.pixel_filter_type = "BLACKMAN_HARRIS"
        c.filter_width = PIXEL_FILTER_WIDTH_PX
        image = self._render(workdir, "image", "Image")[..., :3]
        if not image.max() > 0:  # all black (or NaN): the device failed, not the tissue
            raise self.failure(f"the H&E render on {self.device.backend} ({self.device.name}) came back black")
        size, margin = image.shape[0], (transmittance.shape[1] - image.shape[0]) // 2
        for _, _, sheet in self.composited:
            image = image * filtered(sheet)[margin:margin + size, margin:margin + size]
        return image

    def save_blend(self, path: Path) -> None:
        """The sample's Blender scene, with the sheets ``render_image`` multiplied in as sheets:
        rendered as it is, it gives the same image. (Blender takes a relative path as relative to
        $PWD, which a process started with another working folder may not have updated.)"""
        for layer in self.composited:
            self._sheet(*layer)
        self.composited = []
        bpy.ops.wm.save_as_mainfile(filepath=str(path.absolute()), compress=True, copy=True)
