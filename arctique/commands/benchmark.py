"""``arctique-benchmark``: every part of a benchmark design (``conf/experiment/<design>/``: clean,
noisy, the slider series) rendered in one command, each part a multirun into its own dataset folder.

Parts run in turn; the first that fails stops the command with its exit status. Re-running skips
complete samples, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Optional, Sequence

from ..config import benchmark_designs, benchmark_parts


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="arctique-benchmark", description=__doc__.split("\n\n")[0],
        epilog="example: arctique-benchmark laptop hydra/launcher=local hydra.launcher.n_jobs=2 optics.threads=1")
    parser.add_argument("design", choices=benchmark_designs(),
                        help="laptop (256 px, minutes to hours) or v3 (the reference's released design, for a cluster)")
    parser.add_argument("overrides", nargs="*", help="arctique-gen overrides for every part, e.g. "
                                                     "hydra/launcher=slurm optics.device=gpu")
    parser.add_argument("--parts", help="comma-separated subset, e.g. clean,series_focus (default: all)")
    args = parser.parse_intermixed_args(argv)
    available = benchmark_parts(args.design)
    chosen = args.parts.split(",") if args.parts else available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"--parts: {', '.join(unknown)} not among {', '.join(available)}")
    for part in chosen:
        print(f"arctique-benchmark: {args.design}/{part}", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", "arctique.commands.gen", "-m", f"+experiment={args.design}/{part}",
                               *args.overrides])
        if done.returncode != 0:
            print(f"arctique-benchmark: {args.design}/{part} failed (exit {done.returncode}); "
                  "run the same command again to resume", file=sys.stderr)
            sys.exit(done.returncode)


if __name__ == "__main__":
    main()
