"""The dataset folder of each job of a sweep: named after the values the job was given of the swept
keys (Hydra's override_dirname, without the keys that say which samples or where), so that
arctique-gen's sweeps and arctique-vary's variations name their folders alike."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


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
