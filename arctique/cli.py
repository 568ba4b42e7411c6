"""``arctique-gen``: compose the configuration with Hydra, validate it, render the samples."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ArctiqueConf, ConfigError, register_configs, validate

logger = logging.getLogger("arctique")

register_configs()


def typed_config(cfg: DictConfig) -> ArctiqueConf:
    """Validated dataclass view of a composed config; raises ConfigError before any work starts."""
    typed: ArctiqueConf = OmegaConf.to_object(cfg)
    validate(typed)
    return typed


@hydra.main(config_path="pkg://arctique.conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        typed = typed_config(cfg)
    except ConfigError as exc:
        print(f"arctique-gen: invalid configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    from .pipeline import run  # imports bpy lazily: validation errors come fast

    parameters = OmegaConf.to_container(cfg, resolve=True)
    counts = run(typed, parameters, progress=sys.stderr.isatty() or typed.n_samples > 1)
    logger.info("done: %d rendered, %d already complete, in %s", counts["rendered"], counts["skipped"],
                typed.output.root)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
