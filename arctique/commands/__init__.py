"""The five console commands, one module each (``gen``, ``vary``, ``summary``, ``export``,
``benchmark``): argument parsing, messages and exit codes, apart from the library they call. An
install without the ``gen`` extra (the reader, the exports and the torch adapter only) has the
generator's commands too: they say what to install instead of failing on an import deep inside the
generator.

The functions below are what ``[project.scripts]`` points to, named as the commands are, so that
no function shares its name with a submodule; each imports its command's module only when it runs."""

from __future__ import annotations

import importlib
import importlib.util
import sys

# A module of each of the generator's own dependencies (the "gen" extra of pyproject.toml).
GENERATOR_MODULES = ("bpy", "hydra", "omegaconf", "scipy", "submitit", "yaml", "tqdm", "threadpoolctl")


def _run(module: str, function: str = "main") -> None:
    getattr(importlib.import_module(f"{__name__}.{module}"), function)()


def _generator(command: str, module: str, function: str = "main") -> None:
    missing = [m for m in GENERATOR_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"{command}: the generator is not installed (missing {', '.join(missing)}); install it with "
                 f"pip install \"arctique[gen]\" (Python 3.11), or from a checkout: pip install -e \".[gen]\"")
    _run(module, function)


def arctique_gen() -> None:
    _generator("arctique-gen", "gen", "console")


def arctique_vary() -> None:
    _generator("arctique-vary", "vary")


def arctique_summary() -> None:
    _generator("arctique-summary", "summary")


def arctique_export() -> None:
    """The reader's command: it needs none of the generator's dependencies."""
    _run("export")


def arctique_benchmark() -> None:
    _generator("arctique-benchmark", "benchmark")
