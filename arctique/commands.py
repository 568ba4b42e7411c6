"""The generator's console commands. An install without the ``gen`` extra (the reader, the exports
and the torch adapter only) has them too: they say what to install instead of failing on an import
deep inside the generator."""

from __future__ import annotations

import importlib
import importlib.util
import sys

# A module of each of the generator's own dependencies (the "gen" extra of pyproject.toml).
GENERATOR_MODULES = ("bpy", "hydra", "omegaconf", "scipy", "submitit", "yaml", "tqdm", "threadpoolctl")


def _generator(command: str, module: str, function: str = "main") -> None:
    missing = [m for m in GENERATOR_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"{command}: the generator is not installed (missing {', '.join(missing)}); install it with "
                 f"pip install \"arctique[gen]\" (Python 3.11), or from a checkout: pip install -e \".[gen]\"")
    getattr(importlib.import_module(module), function)()


def gen() -> None:
    _generator("arctique-gen", "arctique.cli", "console")


def vary() -> None:
    _generator("arctique-vary", "arctique.vary")


def summary() -> None:
    _generator("arctique-summary", "arctique.summary")


def benchmark() -> None:
    _generator("arctique-benchmark", "arctique.benchmark")
