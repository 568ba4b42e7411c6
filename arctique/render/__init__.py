"""Renderer: the only package that imports bpy (Blender as a Python module)."""

from .blender import render_scene

__all__ = ["render_scene"]
