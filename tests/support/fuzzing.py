"""Running hypothesis examples one by one against live peers, and what a fuzz test tried.

:func:`fuzz` runs a check on a fixed number of derandomized examples (no deadline, no example
database: the same inputs every run) and returns how many ran.  :class:`FuzzReport` counts
inputs and outcomes and writes them to ``reports/fuzz/<name>.json``::

    report = FuzzReport("csms_frames")
    report.count("not json", "callerror")
    report.tried
    # -> 1
    report.write()
    # -> {'name': 'csms_frames', 'tried': 1, 'outcomes': {'callerror': 1}, ...}

A fuzz test asserts :attr:`tried` against what it meant to try, so that it cannot pass
having sent nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.nodeids import ROOT

T = TypeVar("T")

REPORTS = ROOT / "reports" / "fuzz"
# No shrinking: the examples run against live peers whose state each one may change, so the
# first failing example is the one to report (and a stuck peer fails once, not per shrink).
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int, strategy: st.SearchStrategy[T], check: Callable[[T], None]) -> int:
    """Run ``check`` on ``examples`` examples of ``strategy``; returns how many ran."""
    ran = 0

    @settings(SETTINGS, max_examples=examples)
    @given(strategy)
    def one(example: T) -> None:
        nonlocal ran
        ran += 1
        check(example)

    one()
    return ran


@dataclass
class FuzzReport:
    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    inputs: Counter[str] = field(default_factory=Counter)  # by the kind of input
    started: float = field(default_factory=time.monotonic)

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        self.inputs[kind] += n
        self.outcomes[outcome] += n

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())

    def write(self, **extra: Any) -> dict[str, Any]:
        data = {
            "name": self.name,
            "tried": self.tried,
            "outcomes": dict(sorted(self.outcomes.items())),
            "inputs": dict(sorted(self.inputs.items())),
            "seconds": round(time.monotonic() - self.started, 2),
            **extra,
        }
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{self.name}.json").write_text(json.dumps(data, indent=2) + "\n")
        outcomes = ", ".join(f"{k} {v}" for k, v in data["outcomes"].items())
        print(f"fuzz {self.name}: tried {self.tried} ({outcomes}) in {data['seconds']} s")
        return data
