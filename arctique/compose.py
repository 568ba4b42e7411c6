"""Compose the configuration without the command line (tests, scripts, variations)."""

from __future__ import annotations

from typing import Sequence

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from .config import ArctiqueConf, check_override_keys, register_configs, validate


def load_config(overrides: Sequence[str] = ()) -> ArctiqueConf:
    """The validated, typed configuration for ``overrides`` (Hydra override syntax)."""
    register_configs()
    check_override_keys(overrides)
    with initialize_config_module(config_module="arctique.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    typed: ArctiqueConf = OmegaConf.to_object(cfg)
    validate(typed)
    return typed
