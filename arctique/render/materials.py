"""Shader node trees: Beer-Lambert absorption per stain in the cells (whose meshes are cut to the
slab) and in the tissue sheets."""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Tuple

import numpy as np

from ..appearance import LN10
from ._bpy import bpy
from .voronoi import feature_points

MAX_NUCLEAR_BOOST = 1.5  # highest local hematoxylin of a nucleus relative to its mean uptake
# Blender's noise texture (detail 2) lies within 0.18 of 0.5 for 98 % of points: this gain takes it
# to about [-0.9, 0.9] around the uptake, times the chromatin amount.
CLUMP_GAIN = 5.0


class _Nodes:
    """Terse node-tree construction: ``n.add(type, **props)`` and ``n.link(out, in)``."""

    def __init__(self, material: "bpy.types.Material") -> None:
        material.use_nodes = True
        self.tree = material.node_tree
        self.tree.nodes.clear()

    def add(self, kind: str, **props):
        node = self.tree.nodes.new(kind)
        for key, value in props.items():
            setattr(node, key, value)
        return node

    def link(self, out, inp) -> None:
        self.tree.links.new(out, inp)

    def math(self, op: str, *operands):
        node = self.add("ShaderNodeMath", operation=op)
        for socket, value in zip(node.inputs, operands):
            if value is None:
                continue
            if isinstance(value, (int, float)):
                socket.default_value = value
            else:
                self.link(value, socket)
        return node.outputs[0]

    def obj_attr(self, name: str):
        return self.add("ShaderNodeAttribute", attribute_type="OBJECT", attribute_name=name)

    def absorption(self, od: np.ndarray, density):
        """Cycles absorbs ``density * (1 - colour)`` per channel: colour and scale reproduce
        ``ln(10) * c * od`` for a concentration ``c`` in OD per um."""
        peak = float(od.max())
        node = self.add("ShaderNodeVolumeAbsorption")
        node.inputs["Color"].default_value = (*(1 - od / peak), 1.0)
        self.link(self.math("MULTIPLY", density, LN10 * peak), node.inputs["Density"])
        return node.outputs[0]

    def add_shaders(self, shaders):
        acc = shaders[0]
        for s in shaders[1:]:
            node = self.add("ShaderNodeAddShader")
            self.link(acc, node.inputs[0])
            self.link(s, node.inputs[1])
            acc = node.outputs[0]
        return acc

    def volume_output(self, shader, material: "bpy.types.Material", step_rate: float) -> None:
        out = self.add("ShaderNodeOutputMaterial")
        self.link(shader, out.inputs["Volume"])
        material.cycles.volume_step_rate = step_rate
        material.cycles.homogeneous_volume = False


def _local(n: _Nodes):
    """The shading point in the cell's own frame, in um: each cell object carries its frame as its
    rotation, so its object coordinates are local coordinates without a lookup per step."""
    return n.add("ShaderNodeTexCoord").outputs["Object"]


def _amounts(n: _Nodes, names: Tuple[str, ...]) -> Dict[str, "bpy.types.NodeSocket"]:
    """The cell's four scalar amounts ``names``, held in its object colour (R, G, B, alpha): one
    direct read, where each named object property is a search per evaluation."""
    info = n.add("ShaderNodeObjectInfo")
    rgb = n.add("ShaderNodeSeparateColor")
    n.link(info.outputs["Color"], rgb.inputs[0])
    sockets = [rgb.outputs[0], rgb.outputs[1], rgb.outputs[2], info.outputs["Alpha"]]
    return dict(zip(names, sockets))


def _vector(n: _Nodes, op: str, a, b):
    node = n.add("ShaderNodeVectorMath", operation=op)
    n.link(a, node.inputs[0])
    n.link(b, node.inputs[1])
    return node.outputs[0]


def _nucleus_radius(n: _Nodes, local):
    """Radius normalised to the nucleus' semi-axes (object property ``inv_axes``): 1 on its surface."""
    radius = n.add("ShaderNodeVectorMath", operation="LENGTH")
    n.link(_vector(n, "MULTIPLY", local, n.obj_attr("inv_axes").outputs["Vector"]), radius.inputs[0])
    return radius.outputs["Value"]


def _textured(n: _Nodes, local):
    """``local`` shifted by the cell's own ``texture_offset``, so no two cells share a pattern."""
    return _vector(n, "ADD", local, n.obj_attr("texture_offset").outputs["Vector"])


def _smoothstep(n: _Nodes, value, lo: float, hi: float):
    node = n.add("ShaderNodeMapRange", interpolation_type="SMOOTHSTEP")
    node.inputs["From Min"].default_value = lo
    node.inputs["From Max"].default_value = hi
    n.link(value, node.inputs["Value"])
    return node.outputs["Result"]


# The four scalar amounts of a cell in its object colour (R, G, B, alpha), and the features whose
# nodes a material variant has only when its cells use them (a node whose amount is 0 still costs
# its evaluation at every step of every ray).
NUCLEUS_AMOUNTS = ("h_conc", "chromatin", "rim", "nucleoli")
NUCLEUS_FEATURES = ("rim", "nucleoli")
BODY_AMOUNTS = ("e_conc", "h_conc", "granules", "hof")
BODY_FEATURES = ("granules", "hof", "displaced")


# Nucleoli: spheres of NUCLEOLUS_RADIUS_UM about the feature points of a Voronoi lattice of cells
# NUCLEOLUS_LATTICE_UM wide in the cell's texture space (about one per 2.2 um), where they lie in the
# nucleus' inner zone (radius normalised to its semi-axes below NUCLEOLUS_ZONE).
NUCLEOLUS_LATTICE_UM = 1 / 0.45
NUCLEOLUS_RADIUS_UM = 0.2 * NUCLEOLUS_LATTICE_UM
NUCLEOLUS_ZONE = 0.55

# The membrane shell (radius normalised to the semi-axes from RIM_INNER to RIM_OUTER) and its share
# of the nucleus' volume, weighted by the smooth step (the integral of step(r) 3 r^2 over [0, 1]): a
# rim darkens the shell by (1 + rim) against the interior, so that the nucleus keeps its mean uptake,
# until the shell reaches MAX_NUCLEAR_BOOST times it; a stronger rim then clears the interior
# further (a pale, vesicular nucleus), keeping the ratio.
RIM_INNER, RIM_OUTER = 0.7, 0.95
RIM_SHELL_SHARE = 0.43


def nucleolus_centres(texture_offset: np.ndarray, inv_axes: np.ndarray) -> List[np.ndarray]:
    """Per cell, the local centres (um) of the nucleoli that can reach its inner zone: the feature
    points of the lattice (``voronoi.feature_points``) near the zone, for a shader that tests a
    few points per volume step instead of evaluating a Voronoi texture."""
    n = len(texture_offset)
    if n == 0:
        return []
    to_lattice = 1 / NUCLEOLUS_LATTICE_UM
    half = NUCLEOLUS_ZONE / inv_axes + NUCLEOLUS_RADIUS_UM  # what a nucleolus in the zone can reach
    first = np.floor((texture_offset - half) * to_lattice)
    span = (np.floor((texture_offset + half) * to_lattice) - first + 1).astype(int)
    grid = np.stack(np.meshgrid(*(np.arange(k) for k in span.max(0)), indexing="ij"), -1).reshape(-1, 3)
    cells = first[:, None, :] + grid
    points = feature_points(cells.reshape(-1, 3)).reshape(cells.shape) * NUCLEOLUS_LATTICE_UM
    local = points - texture_offset[:, None, :]
    # A sphere of radius R within the zone |x * inv_axes| < Z has its centre within Z + R max(inv_axes).
    reach = NUCLEOLUS_ZONE + NUCLEOLUS_RADIUS_UM * inv_axes.max(1)
    keep = (grid < span[:, None, :]).all(2) & (np.linalg.norm(local * inv_axes[:, None, :], axis=2) < reach[:, None])
    return [local[i][keep[i]] for i in range(n)]


def nucleus_material(od: Dict[str, np.ndarray], chromatin_scale_um: float, nucleoplasm_floor: float,
                     step_rate: float, features: FrozenSet[str], nucleoli: int) -> "bpy.types.Material":
    """Hematoxylin (``h_conc``) mottled by coarse heterochromatin clumps (``chromatin``) and, among
    ``features``, chromatin moved to a darker membrane rim (``rim``, by the radius normalised to the
    nucleus' semi-axes ``inv_axes``) and small dense nucleoli (``nucleoli``) about the local points
    ``nucleolus_<j>``, j < ``nucleoli`` (``nucleolus_centres``)."""
    mat = bpy.data.materials.new("nucleus_" + "_".join(sorted(features)) + (f"_{nucleoli}" if nucleoli else ""))
    n = _Nodes(mat)
    amount = _amounts(n, NUCLEUS_AMOUNTS)
    local = _local(n)
    noise = n.add("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 1.0 / chromatin_scale_um
    noise.inputs["Detail"].default_value = 2.0
    noise.inputs["Roughness"].default_value = 0.6
    n.link(_textured(n, local), noise.inputs["Vector"])
    # Heterochromatin: clumps where the noise lies above its median, clear nucleoplasm where below, as
    # a real nucleus is mottled at 20x; the clear parts keep ``nucleoplasm_floor`` of the uptake, so
    # that a threshold still finds the whole of a nucleus.
    clumps = n.math("MULTIPLY", n.math("SUBTRACT", noise.outputs["Fac"], 0.5), CLUMP_GAIN)
    density = n.math("MAXIMUM", n.math("MULTIPLY_ADD", clumps, amount["chromatin"], 1.0), nucleoplasm_floor)
    if features & {"rim", "nucleoli"}:
        r = _nucleus_radius(n, local)
    if "rim" in features:
        ratio = n.math("ADD", amount["rim"], 1.0)
        shell = n.math("MINIMUM", n.math("DIVIDE", ratio, n.math("MULTIPLY_ADD", amount["rim"], RIM_SHELL_SHARE, 1.0)),
                       MAX_NUCLEAR_BOOST)
        interior = n.math("DIVIDE", shell, ratio)
        step = _smoothstep(n, r, RIM_INNER, RIM_OUTER)
        density = n.math("MULTIPLY", density,
                         n.math("MULTIPLY_ADD", step, n.math("SUBTRACT", shell, interior), interior))
    if "nucleoli" in features:
        near = None
        for j in range(nucleoli):
            spot = n.add("ShaderNodeVectorMath", operation="DISTANCE")
            n.link(local, spot.inputs[0])
            n.link(n.obj_attr(f"nucleolus_{j}").outputs["Vector"], spot.inputs[1])
            inside = n.math("LESS_THAN", spot.outputs["Value"], NUCLEOLUS_RADIUS_UM)
            near = inside if near is None else n.math("MAXIMUM", near, inside)
        nucleolus = n.math("MULTIPLY", near, n.math("LESS_THAN", r, NUCLEOLUS_ZONE))
        density = n.math("MULTIPLY", density,
                         n.math("MULTIPLY_ADD", nucleolus, n.math("MULTIPLY", amount["nucleoli"], 3.0), 1.0))
    # Capped, so that clumps, rim and nucleoli together never black out a pixel (saturated
    # pixels are grey in optical density and would bend every stain estimate).
    density = n.math("MINIMUM", density, MAX_NUCLEAR_BOOST)
    h = n.math("MULTIPLY", amount["h_conc"], density)
    n.volume_output(n.absorption(od["hematoxylin"], h), mat, step_rate)
    return mat


def body_material(od: Dict[str, np.ndarray], step_rate: float, features: FrozenSet[str]) -> "bpy.types.Material":
    """Cytoplasm: eosin (``e_conc``) and hematoxylin (``h_conc``) per cell and, among ``features``:
    coarse granules holding the share ``granules`` of the eosin (eosinophils), a pale zone ``hof``
    around ``hof_centre`` (plasma cells), and no stain inside a one-lobe nucleus (``displaced``)."""
    mat = bpy.data.materials.new("cytoplasm_" + "_".join(sorted(features)))
    n = _Nodes(mat)
    amount = _amounts(n, BODY_AMOUNTS)
    local = _local(n)
    e, mask = amount["e_conc"], None
    if "granules" in features:
        vor = n.add("ShaderNodeTexVoronoi", feature="F1")
        vor.inputs["Scale"].default_value = 1.6  # granules about 0.6 um apart
        n.link(_textured(n, local), vor.inputs["Vector"])
        granule = n.math("LESS_THAN", vor.outputs["Distance"], 0.3)
        # Granular bodies keep their mean eosin but pack the share g of it into the granules (~11 %).
        e = n.math("MULTIPLY", e, n.math("MULTIPLY_ADD", amount["granules"],
                                         n.math("SUBTRACT", n.math("MULTIPLY", granule, 9.0), 1.0), 1.0))
    if "hof" in features:
        hof_distance = n.add("ShaderNodeVectorMath", operation="DISTANCE")
        n.link(local, hof_distance.inputs[0])
        n.link(n.obj_attr("hof_centre").outputs["Vector"], hof_distance.inputs[1])
        pale = n.math("SUBTRACT", 1.0, n.math("MULTIPLY", amount["hof"],
                                                n.math("SUBTRACT", 1.0, _smoothstep(n, hof_distance.outputs["Value"], 1.0, 2.2))))
        mask = pale
    if "displaced" in features:  # the nucleus (the ellipsoid of semi-axes 1 / inv_axes) displaces the cytoplasm
        outside = n.math("SUBTRACT", 1.0, n.math("LESS_THAN", _nucleus_radius(n, local), 1.0))
        mask = outside if mask is None else n.math("MULTIPLY", mask, outside)
    h = amount["h_conc"]
    if mask is not None:
        e, h = n.math("MULTIPLY", e, mask), n.math("MULTIPLY", h, mask)
    shader = n.add_shaders([n.absorption(od["eosin"], e), n.absorption(od["hematoxylin"], h)])
    n.volume_output(shader, mat, step_rate)
    return mat


def tissue_material(name: str, image: "bpy.types.Image", half_width: float) -> "bpy.types.Material":
    """One depth layer of the matrix as a transparent sheet whose colour is the layer's
    Beer-Lambert transmittance, looked up from an (x, y) texture; costs one lookup per ray."""
    mat = bpy.data.materials.new(name)
    n = _Nodes(mat)
    geo = n.add("ShaderNodeNewGeometry")
    to_uv = n.add("ShaderNodeMapping", vector_type="POINT")
    to_uv.inputs["Location"].default_value = (0.5, 0.5, 0.0)
    to_uv.inputs["Scale"].default_value = (0.5 / half_width, 0.5 / half_width, 1.0)
    n.link(geo.outputs["Position"], to_uv.inputs["Vector"])
    tex = n.add("ShaderNodeTexImage", image=image, interpolation="Linear", extension="EXTEND")
    n.link(to_uv.outputs[0], tex.inputs["Vector"])
    sheet = n.add("ShaderNodeBsdfTransparent")
    n.link(tex.outputs["Color"], sheet.inputs["Color"])
    out = n.add("ShaderNodeOutputMaterial")
    n.link(sheet.outputs[0], out.inputs["Surface"])
    return mat

