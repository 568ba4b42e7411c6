"""Renderer: the only package that imports bpy (Blender as a Python module), and only in the process
that renders (``worker``)."""
