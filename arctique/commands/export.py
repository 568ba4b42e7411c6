"""``arctique-export``: a finished dataset in the layout of a public nuclei dataset (arctique-v3,
Lizard, CoNIC, PanNuke, HoVer-Net patches, COCO), optionally resampled, tiled and split. Nothing is
rendered."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from ..io.export import FORMATS, HOVERNET_INPUT_PX, export

COCOEVAL_MAX_DETS = 100  # pycocotools' COCOeval default params.maxDets[-1]


def main(argv: Optional[Sequence[str]] = None) -> None:
    formats = "\n".join(f"  {name:12s} {w.feeds}" for name, w in FORMATS.items())
    parser = argparse.ArgumentParser(prog="arctique-export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"formats and the code they feed:\n{formats}")
    parser.add_argument("dataset", type=Path, help="an arctique-gen output folder")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="the layout to write")
    parser.add_argument("--out", required=True, type=Path, help="a new (or empty) folder")
    parser.add_argument("--mpp", type=float, help="target pixel size in um (Lizard, CoNIC 0.5; PanNuke 0.25); "
                                                  "default: the dataset's")
    parser.add_argument("--tile", type=int, help="cut each field into tiles of this side in px "
                                                 "(CoNIC and PanNuke: always 256)")
    parser.add_argument("--split", help="e.g. train=0.8,val=0.1,test=0.1: samples shuffled by --split-seed")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split shuffle (default 0)")
    parser.add_argument("--noise", type=float, metavar="L", help="export the label-noise variant of level L")
    parser.add_argument("--annotator", type=int, metavar="K", help="with --noise: simulated annotator K of that level")
    parser.add_argument("--hovernet-mode", choices=list(HOVERNET_INPUT_PX),
                        help="with --format hovernet: refuse patches smaller than that model mode's input")
    args = parser.parse_args(argv)
    try:
        record = export(args.dataset, args.format, args.out, args.mpp, args.tile, args.split,
                        args.split_seed, args.noise, args.annotator, args.hovernet_mode)
    except ValueError as e:
        print(f"arctique-export: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"arctique-export: interrupted; nothing was written to {args.out}", file=sys.stderr)
        sys.exit(130)
    native = FORMATS[args.format].native_mpp
    off = sorted({p["mpp_um"] for p in record["patches"]} - {native}) if native else []
    if off:
        print(f"arctique-export: note: {args.format} data are {native:g} um/px, these patches "
              f"{', '.join(f'{m:g}' for m in off)} um/px (--mpp {native:g} resamples)", file=sys.stderr)
    for name, n in record["left_out"].items():
        print(f"arctique-export: note: {args.format} has no code for {name}: {n} visible nuclei left out of "
              "its maps", file=sys.stderr)
    smallest = min((p["size_px"] for p in record["patches"]), default=0)
    served = [mode for mode, px in HOVERNET_INPUT_PX.items() if smallest >= px]
    if args.format == "hovernet" and args.hovernet_mode is None and len(served) < len(HOVERNET_INPUT_PX):
        print(f"arctique-export: note: {smallest} px patches serve HoVer-Net's "
              f"{' and '.join(served) + ' mode' if served else 'no mode'} only (inputs: "
              f"{', '.join(f'{m} {px} px' for m, px in HOVERNET_INPUT_PX.items())}); --hovernet-mode refuses "
              "what cannot serve the mode you train", file=sys.stderr)
    most = max((p["instances"] for p in record["patches"]), default=0)
    if args.format == "coco" and most > COCOEVAL_MAX_DETS:
        print(f"arctique-export: note: up to {most} nuclei per image; COCOeval counts {COCOEVAL_MAX_DETS} "
              f"detections per image by default: set params.maxDets = [1, 10, {most}]", file=sys.stderr)
    per_split = Counter(p["split"] for p in record["patches"])
    parts = ", ".join(f"{name} {n}" for name, n in per_split.items() if name)
    print(f"{len(record['patches'])} patches{f' ({parts})' if parts else ''} of {len(record['samples'])} "
          f"samples written to {args.out} as {args.format}")


if __name__ == "__main__":
    main()
