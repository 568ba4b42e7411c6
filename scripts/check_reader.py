"""Read and export a dataset where only the reader is installed (``pip install ".[torch]"``, no
generator): every sample through ``arctique.Dataset`` and the torch adapter, then each export
format that needs no more than the reader (Lizard's MATLAB files need scipy). Fails loudly when any
of the generator's dependencies is importable, so that it proves the reader stands alone.

    python scripts/check_reader.py DATASET OUT
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import arctique
from arctique.commands import GENERATOR_MODULES
from arctique.commands.export import main as export

# Exported at 0.5 um/px, where a field of 128 um or more holds a whole 256 px CoNIC or PanNuke patch.
FORMATS = ("arctique-v3", "conic", "pannuke", "hovernet", "coco")


def main(root: Path, out: Path) -> None:
    present = [m for m in GENERATOR_MODULES if importlib.util.find_spec(m) is not None]
    assert not present, f"the generator's dependencies are installed here: {present}"
    import torch

    from arctique.io.torch_dataset import FIELDS, TorchDataset

    data = arctique.Dataset(root)
    assert len(data) > 0, f"no complete sample in {root}"
    for s in data:
        assert s.image.ndim == 3 and s.image.dtype == np.uint8
        assert s.instance.shape == s.semantic.shape == s.image.shape[:2] and s.instance.max() > 0
        assert s.stack.shape[1:] == s.instance.shape and s.cells
    item = TorchDataset(data, fields=tuple(FIELDS))[0]
    assert item["image"].dtype == torch.float32 and item["instance"].dtype == torch.int64
    assert item["class_posterior"].shape[1:] == item["soft"].shape == item["instance"].shape
    for fmt in FORMATS:
        export([str(root), "--out", str(out / fmt), "--format", fmt, "--mpp", "0.5"])
        assert any((out / fmt).rglob("*.*")), fmt
    print(f"reader alone: numpy {np.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}: "
          f"{len(data)} sample(s) read, {len(FORMATS)} formats exported")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
