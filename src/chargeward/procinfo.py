"""What a process costs, read from Linux's ``/proc`` (the simulator and the benchmarks report
it): resident memory, CPU time, and the open-files limit raised to its hard maximum.

    >>> rss_kib() > 0
    True
    >>> cpu_seconds(os.getpid()) >= 0
    True
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from chargeward.errors import ConfigError


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size (``VmRSS``) of ``pid`` in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int | str = "self") -> int:
    """Peak resident set size (``VmHWM``) of ``pid`` in KiB, since it last exec'd (unlike
    ``ru_maxrss``, which keeps the high-water mark of the process it was forked from)."""
    return _status_kib(pid, "VmHWM")


def _status_kib(pid: int | str, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise ConfigError(f"no {name} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
