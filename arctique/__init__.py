"""arctique-gen: synthetic H&E colon histology with exact labels.

Layers: ``config`` (schema) -> ``scene`` (numpy tissue model) -> ``render`` (the only bpy user)
-> ``io`` (files) and ``labels`` (label noise, derived targets). ``pipeline.generate`` ties them.
``arctique.Dataset(path)`` reads a finished dataset (``io.reader``); ``io.export`` writes it in the
formats of the public nuclei datasets.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # The reader is imported on first use, so that ``import arctique`` stays light.
    if name == "Dataset":
        from .io.reader import Dataset

        return Dataset
    raise AttributeError(f"module 'arctique' has no attribute {name!r}")
