"""arctique-gen: synthetic H&E colon histology with exact labels.

Layers: ``config`` (schema) -> ``scene`` (numpy tissue model) -> ``render`` (the only bpy user)
-> ``io`` (files) and ``labels`` (label noise, derived targets). ``pipeline.generate`` ties them.
"""

__version__ = "0.1.0"
