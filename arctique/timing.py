"""Seconds per stage of a sample, logged as each stage starts."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Optional

logger = logging.getLogger("arctique.pipeline")


class StageTimer:
    """Wall-clock seconds per named stage (summed when a stage repeats); with a ``sample`` seed,
    the start of each stage is logged, so long work is never silent. ``beside`` holds the seconds of
    stages that ran in a background process at the same time (``arctique.parallel``): they are not
    part of the sample's wall time."""

    def __init__(self, sample: Optional[int] = None) -> None:
        self.seconds: Dict[str, float] = {}
        self.beside: Dict[str, float] = {}
        self.sample = sample

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self.sample is not None:
            logger.info("sample %d: %s", self.sample, stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def summary(self) -> str:
        own = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        beside = ", ".join(f"{k} {v:.2f}s" for k, v in self.beside.items())
        return f"{own}; beside them: {beside}" if beside else own
