"""Shader node trees: Beer-Lambert absorption per stain, restricted to the slab, and the label shader."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..appearance import LN10
from ._bpy import bpy

LABEL_AOV = "instance"


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


def _chromatin(n: _Nodes, scale_um: float, contrast: float):
    """Density factor 1 +- contrast from a per-cell shifted noise in object space."""
    coords = n.add("ShaderNodeTexCoord")
    offset = n.obj_attr("texture_offset")
    shifted = n.add("ShaderNodeVectorMath", operation="ADD")
    n.link(coords.outputs["Object"], shifted.inputs[0])
    n.link(offset.outputs["Vector"], shifted.inputs[1])
    noise = n.add("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 1.0 / scale_um
    noise.inputs["Detail"].default_value = 1.0
    noise.inputs["Roughness"].default_value = 0.6
    n.link(shifted.outputs[0], noise.inputs["Vector"])
    centred = n.math("SUBTRACT", noise.outputs["Fac"], 0.5)
    return n.math("MAXIMUM", n.math("MULTIPLY_ADD", centred, 2.6 * contrast, 1.0), 0.05)


def nucleus_material(od: Dict[str, np.ndarray], slab: Tuple[float, float], chromatin_scale_um: float,
                     chromatin_contrast: float, step_rate: float) -> "bpy.types.Material":
    """Hematoxylin (object property ``h_conc``) with chromatin texture; shared by all nuclei."""
    mat = bpy.data.materials.new("nucleus")
    n = _Nodes(mat)
    texture = _chromatin(n, chromatin_scale_um, chromatin_contrast)
    h = n.math("MULTIPLY", n.math("MULTIPLY", n.obj_attr("h_conc").outputs["Fac"], texture), _slab_mask(n, slab))
    n.volume_output(n.absorption(od["hematoxylin"], h), mat, step_rate)
    return mat


def body_material(od: Dict[str, np.ndarray], slab: Tuple[float, float], step_rate: float) -> "bpy.types.Material":
    """Cytoplasm: eosin and hematoxylin per cell; eosinophils get dense granules (``granular``)."""
    mat = bpy.data.materials.new("cytoplasm")
    n = _Nodes(mat)
    coords = n.add("ShaderNodeTexCoord")
    vor = n.add("ShaderNodeTexVoronoi", feature="F1")
    vor.inputs["Scale"].default_value = 1.4  # granules ~0.7 um apart
    n.link(coords.outputs["Object"], vor.inputs["Vector"])
    granule = n.math("LESS_THAN", vor.outputs["Distance"], 0.33)
    g = n.obj_attr("granular").outputs["Fac"]
    # Granular bodies keep their mean eosin but concentrate it into the granules.
    factor = n.math("MULTIPLY_ADD", g, n.math("SUBTRACT", n.math("MULTIPLY", granule, 2.2), 1.0), 1.0)
    mask = _slab_mask(n, slab)
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


def label_material(z_floor: float) -> Tuple["bpy.types.Material", "bpy.types.Node"]:
    """Opaque surface writing the object property ``instance`` to the AOV.

    A hit counts when it is a back face (the ray started inside that object) or, unless the
    returned value node is set to 1, when it lies at or above ``z_floor`` (the slab bottom). So 0
    gives first-hit projections within the slab, 1 cross-sections at the camera's clip plane.
    """
    mat = bpy.data.materials.new("label")
    n = _Nodes(mat)
    inside_only = n.add("ShaderNodeValue")
    geo = n.add("ShaderNodeNewGeometry")
    sep = n.add("ShaderNodeSeparateXYZ")
    n.link(geo.outputs["Position"], sep.inputs[0])
    in_slab = n.math("MULTIPLY", n.math("SUBTRACT", 1.0, inside_only.outputs[0]),
                     n.math("GREATER_THAN", sep.outputs["Z"], z_floor))
    gate = n.math("MAXIMUM", in_slab, geo.outputs["Backfacing"])
    value = n.math("MULTIPLY", n.obj_attr("instance").outputs["Fac"], gate)
    aov = n.add("ShaderNodeOutputAOV", aov_name=LABEL_AOV)
    n.link(value, aov.inputs["Value"])
    out = n.add("ShaderNodeOutputMaterial")
    n.link(n.add("ShaderNodeHoldout").outputs[0], out.inputs["Surface"])
    return mat, inside_only
