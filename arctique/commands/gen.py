"""``arctique-gen``: compose the configuration with Hydra, validate it, render the samples."""

from __future__ import annotations

import atexit
import importlib.resources
import logging
import os
import re
import signal
import sys
import threading

from pathlib import Path
from typing import Any, List, NoReturn, Optional, Tuple

import hydra
from hydra._internal.hydra import Hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import ArctiqueConf, ConfigError, check_override_keys, config_groups, register_configs, validate
from ..parallel import lean_threads
from ..sweep_folders import place_sweep_job

logger = logging.getLogger("arctique")


def _required(key: str) -> None:
    """``${arctique_required:key}``: a value the user must give on the command line."""
    raise ConfigError(f"{key} is required: give it on the command line, e.g. {key}=<value>")


def _presets() -> str:
    """``${arctique_presets:}`` in ``--help``: each config group and its options as the command line
    takes them; a group outside the defaults list is added with ``+`` (``+experiment=v3/clean``)."""
    root = Path(str(importlib.resources.files("arctique.conf")))
    chosen = {key for entry in OmegaConf.load(root / "config.yaml").defaults if isinstance(entry, DictConfig)
              for key in entry}
    lines = []
    for group in config_groups():
        if group == "hydra":
            continue
        options = sorted(str(p.relative_to(root / group).with_suffix("")) for p in (root / group).rglob("*.yaml"))
        add = "" if group in chosen else "+"
        lines.append(f"{add}{group}=" + "|".join(options))
    return "\n".join(lines)


register_configs()
OmegaConf.register_new_resolver("arctique_required", _required, replace=True)
OmegaConf.register_new_resolver("arctique_presets", _presets, replace=True)


def typed_config(cfg: DictConfig) -> ArctiqueConf:
    """Validated dataclass view of a composed config; raises ConfigError before any work starts."""
    typed: ArctiqueConf = OmegaConf.to_object(cfg)
    validate(typed)
    return typed


class JobStopped(RuntimeError):
    """A job of a multirun stopped before, while or after rendering, with its one-line reason and exit
    status. The job returns it to the launcher rather than raising it (Hydra would print a line of its
    own and stop reading the other jobs' results); ``printed_to`` identifies the stderr the job printed
    the reason to, so that the launching command prints it only where it is not shown yet (a SLURM
    job's log)."""

    def __init__(self, message: str, status: int, printed_to: Tuple[int, int]) -> None:
        super().__init__(message, status, printed_to)
        self.message, self.status, self.printed_to = message, status, printed_to


def _stderr_id() -> Tuple[int, int]:
    info = os.fstat(2)
    return info.st_dev, info.st_ino


def _stop(message: str, status: int) -> NoReturn:
    """Print one line and end the job: a single run exits with ``status``; a multirun job raises
    JobStopped, which ``_main`` returns: a launcher may wait forever for a job process that exited
    (submitit without SLURM accounting)."""
    print(message, file=sys.stderr)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sys.stderr.flush()
        raise JobStopped(message, status, _stderr_id()) from None
    sys.exit(status)


def _refuse(exc: Exception) -> NoReturn:
    _stop(f"arctique-gen: invalid configuration: {exc}", 2)


@hydra.main(config_path="pkg://arctique.conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> Optional[JobStopped]:
    try:
        _job(cfg)
    except JobStopped as stopped:
        return stopped
    return None


def _job(cfg: DictConfig) -> None:
    from ..render.worker import log_as_the_job

    log_as_the_job(OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True))
    place_sweep_job(cfg)
    try:
        typed = typed_config(cfg)
    except ConfigError as exc:
        _refuse(exc)
    from ..io import dataset as ds
    from ..pipeline import DiskFull, run  # imports bpy lazily: validation errors come fast

    parameters = OmegaConf.to_container(cfg, resolve=True)
    try:
        counts = run(typed, parameters, progress=sys.stderr.isatty())
    except ConfigError as exc:  # found by the checks at the start of the job, before any scene
        _refuse(exc)
    except ds.ManifestError as exc:
        _stop(f"arctique-gen: {exc}", 2)
    except DiskFull as exc:
        _stop(f"arctique-gen: {exc}", 1)
    logger.info("done: %d rendered, %d already complete, %d failed, in %s", counts.rendered, counts.skipped,
                len(counts.failed), typed.output.root)
    if counts.failed:
        _stop(f"arctique-gen: {len(counts.failed)} sample(s) failed (seeds {ds.compact(counts.failed)}); their "
              f"records are in {Path(typed.output.root) / 'failures'}/; run the same command again to retry them", 1)


_SWEEPS: List[Any] = []  # the job results of each sweep this process ran (Hydra.multirun's)


def _multirun_keeping_results(self: Hydra, *args: Any, **kwargs: Any) -> Any:
    """``Hydra.multirun``, keeping its job results, which Hydra's entry point drops, so that the
    command's exit status can come from the jobs that stopped."""
    results = _HYDRA_MULTIRUN(self, *args, **kwargs)
    _SWEEPS.append(results)
    return results


_HYDRA_MULTIRUN = Hydra.multirun


def _end_of_sweep() -> None:
    """Exit with the highest status of the sweep's stopped jobs, each line printed where it is not shown yet."""
    stopped = [job.return_value for batch in (_SWEEPS.pop() if _SWEEPS else []) for job in batch
               if isinstance(job.return_value, JobStopped)]
    for job in stopped:
        if job.printed_to != _stderr_id():
            print(job.message, file=sys.stderr)
    if stopped:
        sys.exit(max(job.status for job in stopped))


def _mode_from_the_command_line(self: Hydra, config_name: Optional[str], overrides: List[str]) -> None:
    """For ``Hydra.get_mode``, which composes the whole configuration (about 0.4 s) only to read
    ``hydra.mode``, set in no file of ``conf/``: None, so that Hydra takes RUN, or MULTIRUN with
    ``-m``, as it does for a configuration without ``hydra.mode``."""
    return None


# Hydra's flags that do not work here, and what to do instead.
UNSUPPORTED_FLAGS = {
    "--experimental-rerun": "a dataset keeps each sample's resolved configuration in parameters/<i>.json: run the "
                            "same command line again (complete samples are skipped), or vary it with arctique-vary",
    "--shell-completion": "arctique-gen has no shell completion",
    "-sc": "arctique-gen has no shell completion",
    "--hydra-help": "arctique-gen --help lists the flags it supports",
}


def _unreadable_override(exc: Exception, args: List[str]) -> str:
    """One line for an override Hydra's grammar cannot read, with the way to quote a value with
    characters outside ASCII (a path, most often)."""
    line = str(exc).splitlines()[0]
    bad = [a for a in args if "=" in a and not a.isascii()]
    if bad:
        key, _, value = bad[0].partition("=")
        return (f"cannot read {bad[0]}: a value with characters outside ASCII must be quoted, "
                f"""e.g. {key}="'{value}'" ({line})""")
    return f"cannot read the command line: {line} (see https://hydra.cc/docs/advanced/override_grammar/basic/)"


def main(argv: Optional[List[str]] = None) -> None:
    """``arctique-gen [overrides]``: keys the schema lacks are refused before Hydra composes. Hydra's
    errors, a job's stop in a sweep and Ctrl-C of a sweep end with one line and the command's exit
    status (2 bad input, 1 failed samples, 130 or 143 for a signal), not a traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    for flag, instead in UNSUPPORTED_FLAGS.items():
        if any(a == flag or a.startswith(flag + "=") for a in args):
            _exit(f"{flag} is not supported: {instead}", 2)
    try:
        check_override_keys([a for a in args if "=" in a and not a.startswith("-")])
    except ConfigError as exc:
        _refuse(exc)
    lean_threads()
    if not any(a.startswith("-") for a in args):  # a single run (no sweep, help or config print)
        from ..render.worker import start_early

        start_early()  # Blender loads while Hydra composes
    if not any(a.lstrip("+~").startswith("hydra.mode") for a in args):
        Hydra.get_mode = _mode_from_the_command_line
    Hydra.multirun = _multirun_keeping_results
    sys.argv = [sys.argv[0], *args]
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors here instead of printing a traceback
    try:
        _main()
        _end_of_sweep()
    except KeyboardInterrupt:
        _sweep_stopped(signal.SIGINT)
    except OverrideParseException as exc:
        _exit(_unreadable_override(exc, args), 2)
    except (HydraException, OmegaConfBaseException) as exc:
        _exit(" ".join(str(exc).split()), 2)
    except Exception as exc:
        sig = _stopping_signal(exc)
        if sig is None:
            raise
        _sweep_stopped(sig)
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


def _stopping_signal(exc: Exception) -> Optional[signal.Signals]:
    """The signal that stopped a sweep's job processes, from a launcher's error about them (joblib's
    TerminatedWorkerError lists their exit codes: 130 or 143 where the job stopped itself, SIGINT(-2)
    where the signal ended the process before a job ran in it), or None."""
    found = re.findall(r"\b(SIGINT|SIGTERM)\(-\d+\)|EXIT\((130|143)\)", str(exc))
    stops = {signal.Signals[name] if name else signal.Signals(int(code) - 128) for name, code in found}
    return max(stops) if stops else None


def _sweep_stopped(sig: signal.Signals) -> NoReturn:
    """Ctrl-C or SIGTERM of a sweep whose jobs run in other processes (each job stops itself and says so)."""
    _exit(f"{sig.name}: sweep stopped; every finished sample is complete, the samples in progress are discarded: "
          "run the same command again to resume", 128 + sig)


def _exit(message: str, status: int) -> NoReturn:
    print(f"arctique-gen: {message}", file=sys.stderr)
    sys.exit(status)


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
