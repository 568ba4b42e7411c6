"""The default job end to end (512 x 512, 40x, all labels): the slow test."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from arctique.io.dataset import Dataset, sample_files

from .conftest import run_cli


@pytest.mark.slow
def test_default_sample_renders_complete(tmp_path):
    run_cli(tmp_path, "seed=42")
    root = tmp_path / "rendered"
    assert Dataset(root).completed() == {42}
    image = np.asarray(Image.open(root / sample_files(42)["image"]))
    instance = tifffile.imread(root / sample_files(42)["instance"])
    assert image.shape == (512, 512, 3) and instance.shape == (512, 512)
    assert np.load(root / sample_files(42)["stack"]).shape == (10, 512, 512)
    assert instance.max() > 100
