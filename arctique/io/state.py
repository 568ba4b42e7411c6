"""The state of a dataset folder (``arctique-summary``): complete, failed, missing, interrupted and
in-progress samples, instances per class, render time and the configurations the samples were made
with, from its manifest, failure and job records, staging folders and per-cell tables."""

from __future__ import annotations

import csv
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional

from . import dataset as ds


def summarise(root: Path, expected: Optional[range] = None) -> Dict[str, Any]:
    """Counts and statistics of one dataset folder. ``expected`` seeds default to those recorded by
    the jobs started in it (``jobs/``), else to the span of the complete and failed ones.

    A seed is interrupted when a signal stopped it (its record says so) or when a staging folder of
    a process that no longer runs holds it; in progress while such a process still runs.
    """
    data = ds.Dataset(root)
    rows = data.manifest()
    complete = sorted(int(r["index"]) for r in rows)
    records = {i: r for i, r in data.failures().items() if i not in complete}
    interrupted = {i for i, r in records.items() if r.get("interrupted")}
    failures = {i: r for i, r in records.items() if i not in interrupted}
    staged = {i: alive for i, alive in data.staged_samples().items() if i not in complete}
    interrupted |= {i for i, alive in staged.items() if not alive}
    in_progress = sorted(i for i, alive in staged.items() if alive)
    if expected is None:
        recorded = data.expected_seeds()
        known = complete + sorted(records)
        span = range(min(known), max(known) + 1) if known else range(0)
        expected = sorted(recorded | set(known)) if recorded else span
    missing = sorted(set(expected) - set(complete) - set(failures))
    classes: Counter = Counter()
    for i in complete:
        with open(root / ds.sample_files(i)["cells_csv"], newline="") as f:
            classes.update(row["class_name"] for row in csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    of_config: Dict[str, list] = {}
    for r in rows:
        of_config.setdefault(r.get("fingerprint") or "unrecorded", []).append(int(r["index"]))
    now = time.time()
    return {
        "root": str(root),
        "expected": ds.compact(expected),
        "complete": len(complete), "failed": len(failures), "missing": len(missing),
        "interrupted": ds.compact(sorted(interrupted)), "in_progress": ds.compact(in_progress),
        "missing_seeds": ds.compact(missing),
        "failures": {str(i): {"error": r["error"], "host": r["host"], "time": r["time"]}
                     for i, r in sorted(failures.items())},
        "instances_per_class": dict(sorted(classes.items())),
        "seconds_per_sample": {"median": round(statistics.median(seconds), 2),
                               "mean": round(statistics.fmean(seconds), 2),
                               "total_hours": round(sum(seconds) / 3600, 3)} if seconds else None,
        "hosts": len({r["host"] for r in rows}),
        # config fingerprint -> its complete samples; more than one: the folder mixes configurations
        "configurations": {fp: ds.compact(seeds) for fp, seeds in sorted(of_config.items())},
        "foreign_staging": [{"path": str(p), "hours": round((now - p.stat().st_mtime) / 3600, 1)}
                            for p in data.foreign_staging()],
    }


def report(s: Dict[str, Any]) -> str:
    span = f" of seeds {s['expected']}" if s["expected"] else ""
    lines = [f"{s['root']}: {s['complete']} complete, {s['failed']} failed, {s['missing']} missing{span}"]
    if s["missing_seeds"]:
        lines.append(f"missing: {s['missing_seeds']}")
    if s["interrupted"]:
        lines.append(f"interrupted (missing, redone by the next run): {s['interrupted']}")
    if s["in_progress"]:
        lines.append(f"in progress: {s['in_progress']}")
    for seed, f in s["failures"].items():
        lines.append(f"failed {seed} on {f['host']} at {f['time']}: {f['error']}")
    if len(s["configurations"]) > 1:
        lines.append("mixed configurations: " + "; ".join(f"samples {seeds} made with config {fp}" for fp, seeds in
                                                          s["configurations"].items())
                     + " - one dataset should hold one: redo the others with output.overwrite=true, or move them")
    if s["foreign_staging"]:
        lines.append("staging folders of jobs on other hosts (this host cannot tell whether they still run; once "
                     "they do not, remove them with rm -r): " +
                     ", ".join(f"{f['path']} ({f['hours']} h old)" for f in s["foreign_staging"]))
    if s["instances_per_class"]:
        lines.append("instances: " + ", ".join(f"{k} {v}" for k, v in s["instances_per_class"].items()))
    if s["seconds_per_sample"]:
        t = s["seconds_per_sample"]
        lines.append(f"seconds per sample: median {t['median']}, mean {t['mean']}; "
                     f"{t['total_hours']} h in all on {s['hosts']} host(s)")
    return "\n".join(lines)
