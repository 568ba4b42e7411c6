"""The one place that imports Blender's Python module, with a message that says what to install."""

try:
    import bpy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "arctique.render needs Blender as a Python module: pip install 'bpy==4.5.*' "
        "(bpy 4.5 is built for Python 3.11 only)"
    ) from exc

REQUIRED = (4, 5)
if tuple(bpy.app.version[:2]) != REQUIRED:  # pragma: no cover
    raise ImportError(
        f"arctique.render is built for bpy {REQUIRED[0]}.{REQUIRED[1]}, found {bpy.app.version_string}; "
        "pip install 'bpy==4.5.*'"
    )

__all__ = ["bpy"]
