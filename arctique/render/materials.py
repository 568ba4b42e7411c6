"""Shader node trees: Beer-Lambert absorption per stain, restricted to the slab."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..appearance import LN10
from ._bpy import bpy

MAX_NUCLEAR_BOOST = 1.5  # highest local hematoxylin of a nucleus relative to its mean uptake


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


def _slab_mask(n: _Nodes, slab: Tuple[float, float]):
    """1 inside z0 <= z <= z1 (world), else 0: nothing outside the section absorbs."""
    geo = n.add("ShaderNodeNewGeometry")
    sep = n.add("ShaderNodeSeparateXYZ")
    n.link(geo.outputs["Position"], sep.inputs[0])
    above = n.math("GREATER_THAN", sep.outputs["Z"], slab[0])
    below = n.math("LESS_THAN", sep.outputs["Z"], slab[1])
    return n.math("MULTIPLY", above, below)


def _local(n: _Nodes):
    """The shading point in the cell's own frame (object properties ``frame_x/y/z``: its local axes
    in world coordinates; object coordinates are world offsets from the cell centre)."""
    coords = n.add("ShaderNodeTexCoord").outputs["Object"]
    parts = []
    for axis in "xyz":
        dot = n.add("ShaderNodeVectorMath", operation="DOT_PRODUCT")
        n.link(coords, dot.inputs[0])
        n.link(n.obj_attr(f"frame_{axis}").outputs["Vector"], dot.inputs[1])
        parts.append(dot.outputs["Value"])
    local = n.add("ShaderNodeCombineXYZ")
    for socket, value in zip(local.inputs, parts):
        n.link(value, socket)
    return local.outputs[0]


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


def nucleus_material(od: Dict[str, np.ndarray], slab: Tuple[float, float], chromatin_scale_um: float,
                     step_rate: float) -> "bpy.types.Material":
    """Hematoxylin (object property ``h_conc``) with coarse chromatin clumps (``chromatin``), a
    darker membrane rim (``rim``, by the radius normalised to the nucleus' semi-axes ``inv_axes``)
    and small dense nucleoli (``nucleoli``); shared by all nuclei."""
    mat = bpy.data.materials.new("nucleus")
    n = _Nodes(mat)
    local = _local(n)
    r = _nucleus_radius(n, local)
    textured = _textured(n, local)
    noise = n.add("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 1.0 / chromatin_scale_um
    noise.inputs["Detail"].default_value = 2.0
    noise.inputs["Roughness"].default_value = 0.6
    n.link(textured, noise.inputs["Vector"])
    clumps = n.math("MULTIPLY", n.math("SUBTRACT", noise.outputs["Fac"], 0.5), 2.0)
    texture = n.math("MAXIMUM", n.math("MULTIPLY_ADD", clumps, n.obj_attr("chromatin").outputs["Fac"], 1.0), 0.1)
    rim = n.math("MULTIPLY_ADD", _smoothstep(n, r, 0.7, 0.95), n.obj_attr("rim").outputs["Fac"], 1.0)
    spots = n.add("ShaderNodeTexVoronoi", feature="F1")
    spots.inputs["Scale"].default_value = 0.45  # about one nucleolus per 2.2 um cell
    n.link(textured, spots.inputs["Vector"])
    nucleolus = n.math("MULTIPLY", n.math("LESS_THAN", spots.outputs["Distance"], 0.2), n.math("LESS_THAN", r, 0.55))
    boost = n.math("MULTIPLY_ADD", nucleolus, n.math("MULTIPLY", n.obj_attr("nucleoli").outputs["Fac"], 3.0), 1.0)
    # Capped, so that clumps, rim and nucleoli together never black out a pixel (saturated
    # pixels are grey in optical density and would bend every stain estimate).
    density = n.math("MINIMUM", n.math("MULTIPLY", n.math("MULTIPLY", texture, rim), boost), MAX_NUCLEAR_BOOST)
    h = n.math("MULTIPLY", n.math("MULTIPLY", n.obj_attr("h_conc").outputs["Fac"], density), _slab_mask(n, slab))
    n.volume_output(n.absorption(od["hematoxylin"], h), mat, step_rate)
    return mat


def body_material(od: Dict[str, np.ndarray], slab: Tuple[float, float], step_rate: float) -> "bpy.types.Material":
    """Cytoplasm: eosin and hematoxylin per cell, outside its nucleus; coarse granules hold the share
    ``granules`` of the eosin (eosinophils); a pale zone ``hof`` around ``hof_centre`` (plasma cells)."""
    mat = bpy.data.materials.new("cytoplasm")
    n = _Nodes(mat)
    local = _local(n)
    vor = n.add("ShaderNodeTexVoronoi", feature="F1")
    vor.inputs["Scale"].default_value = 1.6  # granules about 0.6 um apart
    n.link(_textured(n, local), vor.inputs["Vector"])
    granule = n.math("LESS_THAN", vor.outputs["Distance"], 0.3)
    g = n.obj_attr("granules").outputs["Fac"]
    # Granular bodies keep their mean eosin but pack the share g of it into the granules (~11 %).
    factor = n.math("MULTIPLY_ADD", g, n.math("SUBTRACT", n.math("MULTIPLY", granule, 9.0), 1.0), 1.0)
    hof_distance = n.add("ShaderNodeVectorMath", operation="DISTANCE")
    n.link(local, hof_distance.inputs[0])
    n.link(n.obj_attr("hof_centre").outputs["Vector"], hof_distance.inputs[1])
    pale = n.math("SUBTRACT", 1.0, n.math("MULTIPLY", n.obj_attr("hof").outputs["Fac"],
                                            n.math("SUBTRACT", 1.0, _smoothstep(n, hof_distance.outputs["Value"], 1.0, 2.2))))
    # The nucleus displaces the cytoplasm (one-lobe nuclei: inside the ellipsoid of semi-axes
    # 1 / ``inv_axes``; ``displaced`` is 0 where that ellipsoid does not describe the nucleus).
    in_nucleus = n.math("MULTIPLY", n.math("LESS_THAN", _nucleus_radius(n, local), 1.0),
                        n.obj_attr("displaced").outputs["Fac"])
    mask = n.math("MULTIPLY", n.math("MULTIPLY", _slab_mask(n, slab), pale), n.math("SUBTRACT", 1.0, in_nucleus))
    e = n.math("MULTIPLY", n.math("MULTIPLY", n.obj_attr("e_conc").outputs["Fac"], factor), mask)
    h = n.math("MULTIPLY", n.obj_attr("h_conc").outputs["Fac"], mask)
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

