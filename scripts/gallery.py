"""Make docs/gallery.png: six default samples and one 20x sample, so people see the look first.

Usage::

    python scripts/gallery.py                      # renders what is missing into gallery/ (a few minutes)
    python scripts/gallery.py --root gallery --out docs/gallery.png --tile 256

Samples already complete in the dataset folders are reused (arctique-gen skips them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SEEDS = range(6)
SEED_20X = 0


def render(root: Path, *overrides: str) -> None:
    subprocess.run([sys.executable, "-m", "arctique.commands.gen", f"output.root={root}", "output.preview=false",
                    *overrides], check=True)


def tile(path: Path, size: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.LANCZOS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("gallery"), help="where the samples are rendered")
    parser.add_argument("--out", type=Path, default=Path("docs/gallery.png"))
    parser.add_argument("--tile", type=int, default=192, help="pixels per sample in the gallery")
    args = parser.parse_args()
    default, low = args.root / "40x", args.root / "20x"
    render(default, f"seed={SEEDS.start}", f"n_samples={len(SEEDS)}")
    render(low, "optics=20x", f"seed={SEED_20X}")
    tiles = [tile(default / f"images/image_{s}.png", args.tile) for s in SEEDS]
    tiles.append(tile(low / f"images/image_{SEED_20X}.png", args.tile))
    gap = 4
    cols = 4
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (args.tile + gap) - gap, cols * (args.tile + gap) - gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (args.tile + gap):r * (args.tile + gap) + args.tile,
              c * (args.tile + gap):c * (args.tile + gap) + args.tile] = t
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"wrote {args.out}: seeds {SEEDS.start}-{SEEDS.stop - 1} at 40x (0.25 um/px, 128 um field) "
          f"and seed {SEED_20X} at 20x (0.5 um/px, 128 um field, last tile)")


if __name__ == "__main__":
    main()
