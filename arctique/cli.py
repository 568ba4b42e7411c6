"""``arctique-gen``: compose the configuration with Hydra, validate it, render the samples."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from pathlib import Path
from typing import List, NoReturn, Optional

import hydra
from hydra._internal.hydra import Hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import ArctiqueConf, ConfigError, check_override_keys, register_configs, validate
from .io.dataset import ManifestError
from .parallel import lean_threads

logger = logging.getLogger("arctique")


def _required(key: str) -> None:
    """``${arctique_required:key}``: a value the user must give on the command line."""
    raise ConfigError(f"{key} is required: give it on the command line, e.g. {key}=<value>")


register_configs()
OmegaConf.register_new_resolver("arctique_required", _required, replace=True)


class SamplesFailed(RuntimeError):
    """Raised at the end of a job (after all its other seeds) so that the run or sweep exits non-zero."""

    def __init__(self, root: str, seeds: List[int]) -> None:
        super().__init__(f"{len(seeds)} sample(s) failed: seeds {seeds}; records in {root}/failures/")


def typed_config(cfg: DictConfig) -> ArctiqueConf:
    """Validated dataclass view of a composed config; raises ConfigError before any work starts."""
    typed: ArctiqueConf = OmegaConf.to_object(cfg)
    validate(typed)
    return typed


# Keys that say which samples or where, not how: they never name a sweep's dataset folder.
NOT_IN_FOLDER_NAME = ("seed", "n_samples", "shard.", "output.", "hydra.")


def _names_folder(key: str) -> bool:
    return not any(key == p or (p.endswith(".") and key.startswith(p)) for p in NOT_IN_FOLDER_NAME)


def sweep_folder_name(job_overrides: List[str], swept: Optional[List[str]] = None) -> str:
    """``key=value`` pairs of a job's overrides, sorted and joined with commas (Hydra's
    override_dirname), keeping only the ``swept`` keys (all when None) that name folders."""
    parsed = OverridesParser.create().parse_overrides(list(job_overrides))
    kept = [o.input_line.lstrip("+~").replace("/", "_") for o in parsed
            if _names_folder(o.key_or_group) and (swept is None or o.key_or_group in swept)]
    return ",".join(sorted(kept))


def swept_keys(sweep_dir: Path) -> Optional[List[str]]:
    """The keys given several values on the sweep's command line (from the sweep's multirun.yaml)."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    overrides = OmegaConf.load(path).hydra.overrides.task
    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))
            if o.is_sweep_override()]


def place_sweep_job(cfg: DictConfig) -> None:
    """In a multirun without an explicit ``output.root``, each combination of swept values gets its
    own dataset folder under the default root, named after those values (``nuclei.intensity=0.2``);
    sweeping only seeds or shards keeps one folder."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    task = list(hc.overrides.task)
    if any(o.key_or_group == "output.root" for o in OverridesParser.create().parse_overrides(task)):
        return
    name = sweep_folder_name(task, swept_keys(Path(hc.sweep.dir)))
    if name:
        cfg.output.root = f"{cfg.output.root}/{name}"


class JobStopped(RuntimeError):
    """A job of a multirun stopped before or while rendering (its one-line reason is printed)."""


def _stop(message: str, status: int) -> NoReturn:
    """Print one line and end the job: a single run exits with ``status``; a multirun job raises,
    because a launcher reports a raised error but may wait forever for a job process that exited
    (submitit without SLURM accounting)."""
    print(message, file=sys.stderr)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise JobStopped(message) from None
    sys.exit(status)


def _refuse(exc: Exception) -> NoReturn:
    _stop(f"arctique-gen: invalid configuration: {exc}", 2)


@hydra.main(config_path="pkg://arctique.conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from .render.worker import log_as_the_job

    log_as_the_job(OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True))
    place_sweep_job(cfg)
    try:
        typed = typed_config(cfg)
    except ConfigError as exc:
        _refuse(exc)
    from .pipeline import DiskFull, run  # imports bpy lazily: validation errors come fast

    parameters = OmegaConf.to_container(cfg, resolve=True)
    try:
        counts = run(typed, parameters, progress=sys.stderr.isatty())
    except ConfigError as exc:  # found by the checks at the start of the job, before any scene
        _refuse(exc)
    except ManifestError as exc:
        _stop(f"arctique-gen: {exc}", 2)
    except DiskFull as exc:
        _stop(f"arctique-gen: {exc}", 1)
    logger.info("done: %d rendered, %d already complete, %d failed, in %s", counts.rendered, counts.skipped,
                len(counts.failed), typed.output.root)
    if counts.failed:
        raise SamplesFailed(typed.output.root, counts.failed)


def _mode_from_the_command_line(self: Hydra, config_name: Optional[str], overrides: List[str]) -> None:
    """For ``Hydra.get_mode``, which composes the whole configuration (about 0.4 s) only to read
    ``hydra.mode``, set in no file of ``conf/``: None, so that Hydra takes RUN, or MULTIRUN with
    ``-m``, as it does for a configuration without ``hydra.mode``."""
    return None


def main(argv: Optional[List[str]] = None) -> None:
    """``arctique-gen [overrides]``: keys the schema lacks are refused before Hydra composes."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        check_override_keys([a for a in args if "=" in a and not a.startswith("-")])
    except ConfigError as exc:
        _refuse(exc)
    lean_threads()
    if not any(a.startswith("-") for a in args):  # a single run (no sweep, help or config print)
        from .render.worker import start_early

        start_early()  # Blender loads while Hydra composes
    if not any(a.lstrip("+~").startswith("hydra.mode") for a in args):
        Hydra.get_mode = _mode_from_the_command_line
    sys.argv = [sys.argv[0], *args]
    _main()


def console() -> None:
    """The ``arctique-gen`` command: ``main``, then the end of the process without the interpreter's
    teardown of every module, which takes about 0.4 s with numpy, scipy and Hydra loaded: the exit
    handlers run and the output is flushed, as at a normal exit. Where other threads still run (a
    local sweep's executor), the interpreter ends them in its own order instead."""
    main()
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    console()
