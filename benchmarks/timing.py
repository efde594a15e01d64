"""Wall-clock samples, per-phase splits and profiles for the benchmarks.

Every figure is ``time.perf_counter`` wall time, in seconds:

    >>> samples: list[float] = []
    >>> with stopwatch(samples):
    ...     pass
    >>> len(samples)
    1
    >>> phases = Phases()
    >>> with phases("propose"):
    ...     pass
    >>> sorted(phases.seconds)
    ['propose']
    >>> Stats((3.0, 1.0, 2.0)).median
    2.0
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Samples of one measurement, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": round(self.median, 4),
            "min_s": round(self.min, 4),
            "max_s": round(self.max, 4),
            "samples_s": [round(s, 4) for s in self.samples],
        }


def timed(run: Callable[[], object]) -> float:
    """Seconds taken by one call of ``run``."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


@contextlib.contextmanager
def stopwatch(samples: list[float]) -> Iterator[None]:
    """Append the seconds the block took to ``samples``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        samples.append(time.perf_counter() - start)


@dataclass
class Phases:
    """Seconds spent in each named phase of one run (repeated names add up)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed


def split_medians(runs: list[Phases]) -> dict[str, float]:
    """The median of each phase over ``runs``, in the order the phases first ran."""
    names = list(dict.fromkeys(n for run in runs for n in run.seconds))
    return {n: statistics.median(run.seconds.get(n, 0.0) for run in runs) for n in names}


def profile(run: Callable[[], object], out: Path, *, top: int = 18) -> str:
    """Run ``run`` under cProfile, save the stats to ``out`` and return the top entries.

    The text lists the functions with the most cumulative time, then the most own time.
    """
    profiler = cProfile.Profile()
    profiler.runcall(run)
    profiler.dump_stats(out)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(top)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    return text.getvalue()
