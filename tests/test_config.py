"""Composition and validation: wrong keys and types fail at composition, bad values before work,
each with one line naming the key and its allowed range; ranges are declared once, in the schema."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from arctique import config as schema
from arctique.compose import load_config
from arctique.config import ArctiqueConf, ConfigError, fingerprint, to_dict, validate

from .conftest import run_cli

CONF = Path(schema.__file__).resolve().parents[1] / "conf"


def test_defaults_compose_to_the_documented_values():
    cfg = load_config()
    assert cfg.optics.image_size == 512 and cfg.optics.mpp == 0.25
    assert cfg.tissue.section.thickness_um == [3.0, 5.0]
    assert cfg.nuclei.intensity == 0.42
    assert cfg.output.root == "rendered"


def test_20x_preset_keeps_the_field():
    cfg = load_config(["optics=20x"])
    assert cfg.optics.image_size * cfg.optics.mpp == 128.0


@pytest.mark.parametrize("override, message", [
    ("tissue.section.thickness_um=[0,4]",
     "tissue.section.thickness_um=[0.0, 4.0] is out of range: allowed values in [0.5, 30]"),
    ("tissue.epithelium.goblet_fraction=1.5", "tissue.epithelium.goblet_fraction=1.5 is out of range: allowed [0, 1]"),
    ("cells.ratios.LYM=-1", "cells.ratios.LYM=-1.0 is out of range: allowed [0, 1000]"),
    ("optics.mpp=0", "optics.mpp=0.0 is out of range: allowed [0.05, 4]"),
    ("optics.mpp=50", "optics.mpp=50.0 is out of range: allowed [0.05, 4]"),
    ("optics.image_size=1024 optics.mpp=3", "optics.mpp=3.0 is out of range: allowed optics.image_size * optics.mpp <= 2048 um"),
    ("n_samples=100000000", "n_samples=100000000 is out of range: allowed [1, 1000000]"),
    # a shard index without a shard size would render every seed in every job
    ("shard.index=3", "shard.index=3 is out of range: allowed 0 while shard.size = 0"),
    ("seed=2147483647 n_samples=2", "n_samples=2 is out of range: allowed [1, 1] (the last seed"),
    ("optics.image_size=0", "optics.image_size=0 is out of range: allowed [8, 8192]"),
    ("nuclei.intensity=2", "nuclei.intensity=2.0 is out of range: allowed [0, 1]"),
    ("nuclei.chromatin_scale_um=nan", "nuclei.chromatin_scale_um=nan is out of range: allowed [0.1, 10]"),
    ("optics.device=tpu", "optics.device='tpu' is out of range: allowed 'cpu' or 'gpu'"),
    ("optics.gpu_backend=metal", "optics.gpu_backend='metal' is out of range: allowed 'auto' or 'optix' or 'cuda' or 'hip' or 'oneapi'"),
    ("tissue.crypt.spacing_um=50", "tissue.crypt.spacing_um=50.0 is out of range"),
    ("noise.annotators=-1", "noise.annotators=-1 is out of range: allowed [0, 100]"),
    ("output.soft_subsamples=3", "output.soft_subsamples=3 is out of range: allowed [4, 16]"),
    ("cells.types.LYM.cytoplasm_scale=0.5",
     "cells.types.LYM.cytoplasm_scale=0.5 is out of range: allowed 0 (none) or [1.05, 4]"),
    ("stain.eosin_od=[0,0,0]", "stain.eosin_od=[0.0, 0.0, 0.0] is out of range: allowed three non-negative"),
    ("stain.eosin_od=[1,1]", "stain.eosin_od=[1.0, 1.0] is out of range: allowed a list of 3 values"),
    ("tissue.section.depth_um=[40,900]", "tissue.section.depth_um=[40.0, 900.0] is out of range: allowed values <= "),
])
def test_bad_values_name_key_value_and_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(override.split())
    assert message in str(err.value) and "\n" not in str(err.value)


def _leaf_fields(node, prefix=""):
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def test_every_number_declares_a_bounded_range_and_every_bound_is_enforced():
    """Each numeric field carries a finite [lo, hi]; just past either end the validation names the key."""
    cfg = load_config()
    checked = 0
    for key, f, value in _leaf_fields(cfg):
        if isinstance(value, bool) or isinstance(value, str) and "choices" not in f.metadata:
            continue
        if isinstance(value, str):
            assert value in f.metadata["choices"]
            continue
        lo, hi = f.metadata["range"]
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, key
        if not isinstance(value, (int, float)):
            continue
        for outside in (lo - 1, hi + 1):
            bad = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), {}))
            node = bad
            *path, leaf = key.split(".")
            for part in path:
                node = getattr(node, part)
            setattr(node, leaf, type(value)(outside))
            with pytest.raises(ConfigError, match=re.escape(key + "=")):
                validate(bad)
            checked += 1
    assert checked > 100  # every scalar of the schema, at both ends


def _with(cfg, key: str, value):
    """A copy of the typed config with ``key`` set to ``value``, unvalidated."""
    bad = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg), {}))
    node = bad
    *path, leaf = key.split(".")
    for part in path:
        node = getattr(node, part)
    setattr(node, leaf, value)
    return bad


def test_every_list_and_mapping_refuses_values_just_outside_each_end_and_reversed_spans():
    """Ranges [lo, hi] sampled per sample, per-channel lists and per-class mappings: one value just
    below lo or above hi, at either position, and a reversed span each stop validation naming the key."""
    cfg = load_config()
    checked = 0
    for key, f, value in _leaf_fields(cfg):
        if "range" not in f.metadata or not isinstance(value, (list, dict)) or not value:
            continue
        lo, hi = f.metadata["range"]
        if isinstance(value, dict):
            name = next(iter(value))
            inner = value[name]
            if isinstance(inner, dict):  # noise.semantic.confusion rows are empty by default
                continue
            cases = [{**value, name: lo - 1}, {**value, name: hi + 1}]
        else:
            cases = []
            for position in range(len(value)):
                for outside in (lo - 1, hi + 1):
                    changed = list(value)
                    changed[position] = type(value[position])(outside)
                    cases.append(changed)
            if f.metadata.get("ordered"):
                cases.append([hi, lo])
        for case in cases:
            with pytest.raises(ConfigError, match=re.escape(key)):
                validate(_with(cfg, key, case))
            checked += 1
    assert checked > 100


def test_group_files_hold_only_values_that_differ_from_the_schema():
    defaults = to_dict(ArctiqueConf(tissue=schema.TissueConf(), cells=schema.CellsConf(), stain=schema.StainConf(),
                                    optics=schema.OpticsConf(), scanner=schema.ScannerConf(), noise=schema.NoiseConf(), output=schema.OutputConf()))
    for path in sorted(CONF.glob("*/*.yaml")):
        if path.parent.name == "hydra":
            continue
        text = path.read_text()
        values = yaml.safe_load(text) or {}
        assert "defaults" not in values and "[0," not in "".join(l for l in text.splitlines() if l.startswith("#"))
        for key, value in values.items():
            assert defaults[path.parent.name][key] != value, f"{path}: {key} repeats the schema's default"


def test_ratios_all_zero_message():
    with pytest.raises(ConfigError, match="non-negative, not all zero"):
        load_config(["cells.ratios={PLA:0,LYM:0,EOS:0,FIB:0,NEU:0}"])


@pytest.mark.parametrize("override, nearest", [
    ("+optics.focus_offset=1", "optics.focus_offset_um"),
    ("optics.focus_offset=1", "optics.focus_offset_um"),
    ("tissue.crypts.radius_um=3", "tissue.crypt.radius_um"),
    ("+nucleus.intensity=0.2", "nuclei.intensity"),
])
def test_unknown_key_is_rejected_naming_the_nearest(override, nearest):
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=f"^{re.escape(key)} is not a configuration key; the nearest key is "
                                          f"{re.escape(nearest)}$"):
        load_config([override])


def test_open_mappings_take_new_keys_and_check_them():
    cfg = load_config(["+noise.semantic.confusion.LYM={PLA:3,EOS:1}"])
    assert cfg.noise.semantic.confusion == {"LYM": {"PLA": 3.0, "EOS": 1.0}}
    with pytest.raises(ConfigError, match=r"cells.nucleus_scale.XYZ=1.0 is out of range: allowed keys among"):
        load_config(["+cells.nucleus_scale.XYZ=1.0"])


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        load_config(["optics.samples=many"])


def test_fingerprint_follows_the_files_not_the_place_or_device():
    base = fingerprint(to_dict(load_config()))
    assert fingerprint(to_dict(load_config(["seed=9", "n_samples=4", "output.root=x", "optics.threads=2",
                                            "output.overwrite=true"]))) == base
    for changed in ("optics.image_size=96", "nuclei.intensity=0.3", "output.z_slices=4", "noise=levels",
                    "cells.types.FIB.rim=0.5", "tissue.rips.strength=0.1"):
        assert fingerprint(to_dict(load_config([changed]))) != base, changed


def test_cli_rejects_bad_value_before_any_output(tmp_path):
    proc = run_cli(tmp_path, "optics.mpp=-1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("arctique-gen: invalid configuration: optics.mpp=-1.0 is out of range: "
                                   "allowed [0.05, 4]")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override", ["tissue.crypts.radius_um=3", "+optics.focus_offset=1"])
def test_cli_rejects_unknown_key_before_any_output(tmp_path, override):
    proc = run_cli(tmp_path, override, "optics.image_size=64", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("is not a configuration key; the nearest key is "
                                        + ("tissue.crypt.radius_um" if "crypts" in override else "optics.focus_offset_um"))
    assert list(tmp_path.iterdir()) == []


def test_help_lists_no_schema_entries(tmp_path):
    proc = run_cli(tmp_path, "--help")
    assert "optics=20x|40x" in proc.stdout and "base_" not in proc.stdout
