"""``arctique-vary``: re-render every sample of a dataset with some parameters changed.

The variation itself (reading the changes, the jobs of the samples) is ``arctique.variation``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..config import ConfigError
from ..io import dataset as ds
from ..pipeline import VARY_OPTIONS, DiskFull, render_samples
from ..sweep_folders import sweep_folder_name
from ..variation import plan, read_changes

logger = logging.getLogger("arctique")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="arctique-vary", description=__doc__.split("\n\n")[0],
        epilog="example: arctique-vary rendered nuclei.intensity=0.2  "
               "(writes rendered/variations/nuclei.intensity=0.2/)")
    parser.add_argument("dataset", type=Path, help="an arctique-gen output folder")
    parser.add_argument("overrides", nargs="*", help="changed parameters, key=value (dotted keys)")
    parser.add_argument("--changes", type=Path, help="YAML or JSON file of changed parameters")
    parser.add_argument("--name", help="variation name (default: the file's stem or the overrides)")
    parser.add_argument("--into", type=Path, help="output folder (default: <dataset>/variations/<name>)")
    parser.add_argument("--samples", type=lambda s: [int(v) for v in s.split(",")],
                        help="comma-separated sample indices (default: every complete sample)")
    parser.add_argument("--overwrite", action="store_true", help="redo samples already complete in the output")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    try:
        changes = read_changes(args.overrides, args.changes)
        if not changes:
            raise ConfigError("no changed parameters: give key=value arguments or --changes FILE")
        name = args.name or (args.changes.stem if args.changes else sweep_folder_name(args.overrides))
        out = args.into or args.dataset / "variations" / ds.folder_name(name, "--name")
        jobs = plan(args.dataset, changes, out, args.samples)
    except (ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"arctique-vary: {exc}", file=sys.stderr)
        sys.exit(2)
    if jobs[0].rendered_in is not None:
        logger.info("%d samples into %s: label noise only, images and clean labels copied", len(jobs), out)
    else:
        kept = sum(j.scene_file is not None for j in jobs)
        logger.info("%d samples into %s: %d re-render their saved scene, %d rebuild it from the seed",
                    len(jobs), out, kept, len(jobs) - kept)
    try:
        counts = render_samples(ds.Dataset(out), jobs, args.overwrite, progress=sys.stderr.isatty(),
                                options=VARY_OPTIONS)
    except ConfigError as exc:  # found by the checks at the start of the job, before any scene
        print(f"arctique-vary: {exc}", file=sys.stderr)
        sys.exit(2)
    except DiskFull as exc:
        print(f"arctique-vary: {exc}", file=sys.stderr)
        sys.exit(1)
    logger.info("done: %d rendered, %d already complete, %d failed, in %s", counts.rendered, counts.skipped,
                len(counts.failed), out)
    if counts.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
