"""Scene model (numpy only, never imports bpy): tissue architecture, section pose and cells."""

from .build import build_scene, field_um, scene_key
from .model import SceneModel, load, save

__all__ = ["build_scene", "field_um", "scene_key", "SceneModel", "load", "save"]
