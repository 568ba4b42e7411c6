"""Composition and validation: wrong keys and types fail at composition, bad values before work."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from arctique.compose import load_config
from arctique.config import ConfigError

from .conftest import run_cli


def test_defaults_compose_to_the_documented_values():
    cfg = load_config()
    assert cfg.optics.image_size == 512 and cfg.optics.mpp == 0.25
    assert cfg.tissue.section.thickness_um == [3.0, 5.0]
    assert cfg.nuclei.intensity == 0.6
    assert cfg.output.root == "rendered"


def test_20x_preset_keeps_the_field():
    cfg = load_config(["optics=20x"])
    assert cfg.optics.image_size * cfg.optics.mpp == 128.0


@pytest.mark.parametrize("override, message", [
    ("tissue.section.thickness_um=[0,4]",
     "tissue.section.thickness_um=[0.0, 4.0] is out of range: allowed values in [0.5, 30]"),
    ("tissue.epithelium.goblet_fraction=1.5", "tissue.epithelium.goblet_fraction=1.5 is out of range: allowed [0, 1]"),
    ("cells.ratios.LYM=-1", "cells.ratios.LYM=-1.0 is out of range: allowed >= 0"),
    ("optics.mpp=0", "optics.mpp=0.0 is out of range: allowed > 0"),
    ("optics.image_size=0", "optics.image_size=0 is out of range: allowed [8, 8192]"),
    ("nuclei.intensity=2", "nuclei.intensity=2.0 is out of range: allowed [0, 1]"),
    ("optics.device=tpu", "optics.device='tpu' is out of range: allowed 'cpu' or 'gpu'"),
    ("optics.gpu_backend=metal", "optics.gpu_backend='metal' is out of range: allowed auto | optix | cuda | hip | oneapi"),
    ("tissue.crypt.spacing_um=50", "tissue.crypt.spacing_um=50.0 is out of range"),
    ("noise.annotators=-1", "noise.annotators=-1 is out of range: allowed [0, 100]"),
    ("output.soft_subsamples=3", "output.soft_subsamples=3 is out of range: allowed [4, 16]"),
])
def test_bad_values_name_key_value_and_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert message in str(err.value)


def test_ratios_all_zero_message():
    with pytest.raises(ConfigError, match="non-negative, not all zero"):
        load_config(["cells.ratios={PLA:0,LYM:0,EOS:0,FIB:0,NEU:0}"])


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        load_config(["optics.focus_offset=1"])


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        load_config(["optics.samples=many"])


def test_cli_rejects_bad_value_before_any_output(tmp_path):
    proc = run_cli(tmp_path, "optics.mpp=-1", check=False)
    assert proc.returncode != 0
    assert "optics.mpp=-1.0 is out of range: allowed > 0" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_unknown_key_before_any_output(tmp_path):
    proc = run_cli(tmp_path, "tissue.crypts.radius_um=3", check=False)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []
