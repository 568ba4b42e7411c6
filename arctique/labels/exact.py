"""The label passes (scene cell ids), read from the crossings of the pixel-centre rays with the
meshes Blender renders, and from them the label contract: contiguous ids, semantic map and the
per-cell table (DESIGN.md section 6). numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np

from ..classes import CLASS_NAMES
from ..scene.architecture import compartment_map
from ..scene.model import COMPARTMENT_NAMES, SceneModel
from .trace import Crossings


def slice_depths(z0: float, z1: float, n: int) -> np.ndarray:
    """Depths of the 3D stack's slices, top (camera side) first, at the centres of n equal parts."""
    return z1 - (z1 - z0) * (np.arange(n) + 0.5) / n


def label_passes(scene: SceneModel, nuclei: Crossings, bodies: Crossings, z_slices: int) -> Dict[str, np.ndarray]:
    """Scene cell ids seen by the pixel-centre rays (``trace.crossings`` of the nucleus and cell-body
    meshes with ``z_span`` (-inf, z1)).

    ``instance`` and ``cytoplasm``: the surface a ray meets first below the slab top, if it lies in
    the slab or is a back face (the ray enters the slab inside that cell); ``stack`` (Z, H, W): the
    nucleus containing each point at the slice depths (the first surface below it is a back face).
    """
    sec, ids = scene.section, scene.cells.cell_id
    nuclei, bodies = nuclei.top_down(), bodies.top_down()
    return {
        "instance": nuclei.first_below(sec.z1, sec.z0, ids),
        "cytoplasm": bodies.first_below(sec.z1, sec.z0, ids),
        "stack": np.stack([nuclei.first_below(z, np.inf, ids) for z in slice_depths(sec.z0, sec.z1, z_slices)]),
    }


def pixel_centres(size: int, mpp: float) -> np.ndarray:
    """(size * size, 2) section-frame (x, y) of the pixel centres, row-major, top row first."""
    c = (np.arange(size) + 0.5 - size / 2) * mpp
    xx, yy = np.meshgrid(c, -c)
    return np.column_stack([xx.ravel(), yy.ravel()])


def tissue_classes() -> Dict[str, str]:
    """Values of the tissue compartment mask and their names."""
    return {str(i): name for i, name in enumerate(COMPARTMENT_NAMES)}


def tissue_mask(scene: SceneModel, size: int, mpp: float) -> np.ndarray:
    """(size, size) uint8 tissue compartment of each pixel centre in the slab's mid-plane (the focal
    plane at optics.focus_offset_um = 0, fixed so that focus sweeps keep every label): exact with
    respect to the scene model; nuclei are in the instance masks, not here."""
    z = (scene.section.z0 + scene.section.z1) / 2
    xy = pixel_centres(size, mpp)
    points = np.column_stack([xy, np.full(len(xy), z)])
    return compartment_map(scene, points).reshape(size, size).astype(np.uint8)


def label_dtype(n: int) -> type:
    return np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32


@dataclass(frozen=True)
class Labels:
    instance: np.ndarray  # (H, W) ids 1..N, 0 background
    semantic: np.ndarray  # (H, W) uint8 class ids
    cytoplasm: np.ndarray  # (H, W) instance ids of cell bodies
    stack: np.ndarray  # (Z, H, W) instance ids of the nucleus containing each voxel centre
    cells: List[Dict[str, Any]]  # one row per instance id, in id order


def finalize(scene: SceneModel, raw: Dict[str, np.ndarray], mpp: float, focus_z: float,
             nucleus_z_range: np.ndarray) -> Labels:
    """Renumber the scene cell ids that appear in any pass to 1..N (in scene order).

    Args:
        raw: ``instance``, ``cytoplasm`` (H, W) and ``stack`` (Z, H, W) arrays of scene cell ids.
        nucleus_z_range: (N_cells, 2) lowest and highest z of each nucleus mesh.
    """
    cells = scene.cells
    present = np.unique(np.concatenate([np.unique(raw[k]) for k in ("instance", "cytoplasm", "stack")]))
    present = present[present > 0]
    lut = np.zeros(int(cells.cell_id.max(initial=0)) + 1, np.int64)
    lut[present] = np.arange(1, len(present) + 1)
    dtype = label_dtype(len(present))
    instance = lut[raw["instance"]].astype(dtype)
    cytoplasm = lut[raw["cytoplasm"]].astype(dtype)
    stack = lut[raw["stack"]].astype(dtype)
    class_of = np.zeros(len(present) + 1, np.uint8)
    rows = present - 1  # scene cell ids are rows + 1
    class_of[1:] = cells.cls[rows]
    semantic = class_of[instance]

    n = len(present) + 1
    area = np.bincount(instance.ravel(), minlength=n)
    body_area = np.bincount(cytoplasm.ravel(), minlength=n)
    voxels = np.bincount(stack.ravel(), minlength=n)
    sec = scene.section
    dz = sec.thickness / stack.shape[0]
    size = instance.shape[0]
    table = []
    for new_id, row in enumerate(rows, start=1):
        x, y, z = (float(v) for v in cells.centre[row])
        lo, hi = nucleus_z_range[row]
        table.append({
            "id": new_id,
            "scene_cell_id": int(cells.cell_id[row]),
            "class_id": int(cells.cls[row]),
            "class_name": CLASS_NAMES[int(cells.cls[row])],
            "goblet": bool(cells.goblet[row]),
            "centroid_um": [round(x, 4), round(y, 4), round(z, 4)],
            "centroid_px": [round(x / mpp + size / 2 - 0.5, 3), round(size / 2 - 0.5 - y / mpp, 3)],
            "visible_area_px": int(area[new_id]),
            "cytoplasm_area_px": int(body_area[new_id]),
            "voxels": int(voxels[new_id]),
            "volume_um3": round(float(voxels[new_id]) * mpp * mpp * dz, 4),
            "depth_to_focus_um": round(z - focus_z, 4),
            "cut_top": bool(hi > sec.z1),
            "cut_bottom": bool(lo < sec.z0),
        })
    return Labels(instance=instance, semantic=semantic, cytoplasm=cytoplasm, stack=stack, cells=table)
