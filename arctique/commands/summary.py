"""``arctique-summary``: the state of a dataset folder - complete, failed, missing and in-progress
samples, instances per class and render time - from its manifest, failure records and per-cell tables;
with ``--stats``, a realism report of the complete samples (``arctique.stats``).

The state itself is read by ``arctique.io.state``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .. import realism, stats
from ..io import dataset as ds
from ..io.state import report, summarise


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="arctique-summary", description=__doc__.split("\n\n")[0],
                                     epilog="exit status: 0 when every expected sample is complete, 1 when any "
                                            "is missing, failed, interrupted or in progress or the samples were "
                                            "made with more than one configuration, 2 on bad arguments")
    parser.add_argument("dataset", type=Path, help="an arctique-gen output folder")
    parser.add_argument("--seeds", type=seed_range, metavar="SEEDS",
                        help="expected seeds: START:END (END excluded, e.g. 0:1000) or one seed "
                             "(default: the seeds of the jobs started in the dataset)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--stats", action="store_true",
                        help="add the realism report of the complete samples (nuclei, tissue, OD, stains)")
    parser.add_argument("--reference", type=Path, action="append", default=[], metavar="FILE",
                        help="a real H&E image (PNG, JPEG, TIFF, SVS) shown beside the dataset's "
                             "image figures; repeatable; needs --stats")
    parser.add_argument("--reference-level", type=int, default=0, metavar="N",
                        help="pyramid level of TIFF/SVS references (0 = base, default)")
    parser.add_argument("--reference-crop", type=int, default=2048, metavar="PX",
                        help="side of the central square of each reference that is analysed (default 2048)")
    realism_options(parser)
    args = parser.parse_args(argv)
    if args.reference and not args.stats:
        parser.error("--reference needs --stats")
    for option in ("real_mpp", "montage", "real_source_pattern"):
        if getattr(args, option) is not None and not args.realism:
            parser.error(f"--{option.replace('_', '-')} needs --realism")
    if not any((args.dataset / name).exists() for name in (ds.MANIFEST, "failures", "jobs")):
        print(f"arctique-summary: {args.dataset} has no manifest.csv, failures/ or jobs/: not a dataset (yet)",
              file=sys.stderr)
        sys.exit(2)
    try:
        s = summarise(args.dataset, args.seeds)
    except ds.ManifestError as e:
        print(f"arctique-summary: {e}", file=sys.stderr)
        sys.exit(2)
    text = report(s)
    if args.stats:
        complete = sorted(int(r["index"]) for r in ds.Dataset(args.dataset).manifest())
        st = stats.dataset_stats(args.dataset, complete)
        try:
            refs = [stats.reference_stats(p, args.reference_level, args.reference_crop)
                    for p in args.reference]
        except (OSError, ValueError) as e:
            print(f"arctique-summary: cannot read a reference image: {e}", file=sys.stderr)
            sys.exit(2)
        s["stats"] = {**st, "references": refs}
        text += "\n\n" + stats.report_stats(st, refs)
    if args.realism:
        s["realism"] = realism_of(args, sorted(int(r["index"]) for r in ds.Dataset(args.dataset).manifest()))
        text += "\n\n" + realism.report_realism(s["realism"])
    try:
        print(json.dumps(s, indent=1) if args.json else text, flush=True)
    except BrokenPipeError:  # the reader stopped early (| head): the rest is not wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0 if s["failed"] == 0 and s["missing"] == 0 and len(s["configurations"]) <= 1 else 1)


def realism_options(parser: argparse.ArgumentParser) -> None:
    d = realism.RealismSettings()
    group = parser.add_argument_group("realism against real H&E (arctique.realism; needs the realism extra)")
    group.add_argument("--realism", type=Path, nargs="+", metavar="REAL",
                       help="folders or files of real H&E (PNG, JPEG, TIFF, SVS); a folder's image "
                            "sub-folders are its sources (patients, slides, labs)")
    group.add_argument("--real-mpp", type=float, metavar="UM",
                       help="um per pixel of real images that do not record it (TIFF/SVS do)")
    group.add_argument("--real-source-pattern", metavar="REGEX",
                       help="the source of a real image: the first group of this expression in its file name")
    group.add_argument("--montage", type=Path, metavar="FILE.png",
                       help="write random crops of ours beside real ones at the common pixel size")
    group.add_argument("--crop-px", type=int, default=d.crop_px, metavar="PX",
                       help=f"crop side at the common pixel size (default {d.crop_px})")
    group.add_argument("--crops-per-image", type=int, default=d.crops_per_image, metavar="N",
                       help=f"random crops per image (default {d.crops_per_image})")
    group.add_argument("--realism-seed", type=int, default=d.seed, metavar="SEED",
                       help=f"seed of the crops, folds and forest (default {d.seed})")


def realism_of(args: argparse.Namespace, indices: Sequence[int]) -> Dict[str, Any]:
    """The realism test of ``args``, or exit 2 with one line on bad input."""
    for option, value, low in (("--crop-px", args.crop_px, 16), ("--crops-per-image", args.crops_per_image, 1)):
        if value < low:
            _fail(f"{option} {value}: must be at least {low}")
    if args.real_mpp is not None and not 0.01 <= args.real_mpp <= 100:
        _fail(f"--real-mpp {args.real_mpp}: must lie in [0.01, 100] um per pixel")
    settings = realism.RealismSettings(crop_px=args.crop_px, crops_per_image=args.crops_per_image,
                                       seed=args.realism_seed)
    try:
        return realism.realism(args.dataset, indices, args.realism, args.real_mpp, args.real_source_pattern,
                               settings, args.montage)
    except ImportError as e:
        _fail(f"--realism needs scikit-image and scikit-learn: pip install 'arctique[realism]' ({e})")
    except (realism.RealismError, re.error) as e:
        _fail(str(e))


def _fail(message: str) -> None:
    print(f"arctique-summary: {message}", file=sys.stderr)
    sys.exit(2)


def seed_range(text: str) -> range:
    """``--seeds`` value: ``START:END`` (END excluded) or a single seed."""
    start, colon, end = text.partition(":")
    try:
        seeds = range(int(start), int(end)) if colon else range(int(start), int(start) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:END or a seed (integers)") from None
    if not seeds or seeds.start < 0:
        raise argparse.ArgumentTypeError(f"{text!r} holds no seed: START must be >= 0 and below END")
    return seeds


if __name__ == "__main__":
    main()
