"""A variation of a dataset: every sample re-rendered with some parameters changed (``arctique-vary``).

Each sample's saved parameters (``parameters/<i>.json``) are updated with the changes, validated
(all samples before anything renders) and rendered into ``<dataset>/variations/<name>/``. When the
changes leave the scene-shaping part of the config as it was (``seed``, ``tissue``, ``cells``,
field of view), the saved scene (``scenes/<i>.npz``) is re-rendered, so geometry and labels are
identical; otherwise the scene is rebuilt from the same seed, whose unchanged streams keep every
part that the change does not touch. Changes of ``noise`` alone render nothing: the image and
clean labels are copied and only the label-noise variants are derived.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import ArctiqueConf, ConfigError, check_keys, validate
from .io import dataset as ds
from .pipeline import SampleJob
from .scene import scene_key

# Keys of arctique-gen's job, not of a sample, and what a variation offers instead.
JOB_KEYS = {
    "output.root": "choose the output folder with --into",
    "output.overwrite": "redo complete samples with --overwrite",
    "n_samples": "choose samples with --samples",
    "shard.size": "choose samples with --samples",
    "shard.index": "choose samples with --samples",
}


def read_changes(overrides: Sequence[str], changes_file: Optional[Path]) -> DictConfig:
    """Changes from a YAML/JSON file (nested or dotted keys) and then ``key=value`` arguments."""
    changes = OmegaConf.create()
    if changes_file is not None:
        try:
            data = yaml.safe_load(changes_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{changes_file}: not valid YAML or JSON: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{changes_file}: expected a mapping of parameters to new values")
        for key, value in data.items():
            OmegaConf.update(changes, str(key), value, merge=True)
    try:  # the override grammar of arctique-gen, so values read the same in both commands
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    for o in parsed:
        if o.is_sweep_override():
            raise ConfigError(f"{o.input_line}: a variation takes one value per key (sweep with arctique-gen -m)")
        OmegaConf.update(changes, o.key_or_group, o.value(), merge=True)
    keys = _dotted_keys(OmegaConf.to_container(changes))
    check_keys(keys)
    for key in keys:
        if key in JOB_KEYS:
            raise ConfigError(f"{key}: a variation keeps the dataset's samples and writes beside them; "
                              f"{JOB_KEYS[key]}")
    return changes


def _dotted_keys(node: Any, prefix: str = "") -> List[str]:
    """``a.b.c`` for every leaf of a nested mapping."""
    if not isinstance(node, dict) or not node:
        return [prefix.rstrip(".")] if prefix else []
    return [k for key, value in node.items() for k in _dotted_keys(value, f"{prefix}{key}.")]


def varied_config(parameters: Dict[str, Any], changes: DictConfig, root: Path) -> ArctiqueConf:
    """The saved parameters of a sample with the changes applied, typed and validated."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ArctiqueConf), parameters, changes,
                                 {"n_samples": 1, "shard": {"size": 0, "index": 0},
                                  "output": {"root": str(root)}})
        typed: ArctiqueConf = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    validate(typed)
    return typed


def plan(source: Path, changes: DictConfig, out: Path, samples: Optional[List[int]] = None) -> List[SampleJob]:
    """One job per complete sample of ``source``, checked before anything is rendered."""
    if not source.is_dir():
        raise ConfigError(f"{source}: no such dataset folder")
    if not (source / ds.MANIFEST).exists():
        raise ConfigError(f"{source} is not a dataset: it has no {ds.MANIFEST}")
    src = ds.Dataset(source)
    indices = sorted(src.completed())
    if samples is not None:
        missing = sorted(set(samples) - set(indices))
        if missing:
            raise ConfigError(f"samples={missing} are not complete in {source}")
        indices = sorted(samples)
    if not indices:
        raise ConfigError(f"{source} has no complete sample (no manifest rows)")
    noise_only = set(changes.keys()) == {"noise"}
    jobs = []
    for index in indices:
        files = ds.sample_files(index)
        saved = source / files["parameters"]
        try:
            parameters = json.loads(saved.read_text())
            original = varied_config(parameters, OmegaConf.create(), out)
            cfg = varied_config(parameters, changes, out)
        except (OSError, ValueError) as exc:  # ConfigError and json's errors are ValueErrors
            raise ConfigError(f"sample {index} ({saved}): {' '.join(str(exc).split())}") from None
        if cfg.seed != index:
            raise ConfigError(f"seed={cfg.seed} cannot be varied: a variation keeps each sample's seed")
        keeps_scene = scene_key(cfg) == scene_key(original)
        resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
        if noise_only:
            jobs.append(SampleJob(index, cfg, resolved, rendered_in=source))
        else:
            jobs.append(SampleJob(index, cfg, resolved, source / files["scene"] if keeps_scene else None))
    return jobs
