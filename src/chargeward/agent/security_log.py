"""The charger's security log: an append-only record of security events on its flash.

UK Smart Charge Points Regulations Sch.1 para 10 asks for a log of tamper, update and
authentication events with timestamps; OCPP 2.0.1 N01 uploads it on ``GetLog(SecurityLog)``.

    log = SecurityLog(Path("charger-1") / "log")
    log.append("InvalidFirmwareSignature", "image a3f2...", time=now)
    [e.type for e in log.entries(oldest=now - dt.timedelta(days=1))]
    # -> ['InvalidFirmwareSignature']

On flash::

    log/security.jsonl                 the segment being written, one JSON object a line:
                                       {"seq", "time" (UTC ISO 8601), "type", "tech_info",
                                        "notify" (also sent as SecurityEventNotification)}
    log/security.<first seq>.jsonl     older segments, the oldest deleted first

Every append is fsynced before it returns.  A power loss can leave a torn last line: readers
skip any line that is not a whole entry, and the next append starts on a fresh line.  When
the current segment would grow past ``max_file_bytes`` it is renamed to an older segment
(one rename, so a power loss leaves it either current or old) and only the newest
``max_files`` segments are kept: the log never takes more than about
``max_files * max_file_bytes`` of flash.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chargeward.agent.storage import fsync_dir
from chargeward.errors import ConfigError, InvalidValue

CURRENT = "security.jsonl"
_SEGMENT = re.compile(r"^security\.(\d{1,20})\.jsonl$")
TYPE_MAX = 50  # SecurityEventNotificationRequest.type
TECH_INFO_MAX = 512  # locally twice what SecurityEventNotificationRequest.techInfo carries
LINE_MAX = 6 * (TYPE_MAX + TECH_INFO_MAX) + 200  # the longest line: every character escaped


@dataclass(frozen=True)
class SecurityLogLimits:
    """How much flash the log may take: ``max_files`` segments of ``max_file_bytes``."""

    max_file_bytes: int = 64 * 1024
    max_files: int = 8

    def __post_init__(self) -> None:
        if self.max_file_bytes < LINE_MAX or self.max_files < 1:
            raise ConfigError(
                f"the security log needs at least one segment of {LINE_MAX} bytes or more"
            )


@dataclass(frozen=True)
class SecurityLogEntry:
    seq: int
    time: dt.datetime
    type: str
    tech_info: str
    notify: bool = True

    def to_json(self) -> str:
        return json.dumps(
            {
                "seq": self.seq,
                "time": self.time.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
                "type": self.type,
                "tech_info": self.tech_info,
                "notify": self.notify,
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, line: bytes) -> SecurityLogEntry | None:
        """The entry on ``line``, or None if it is torn or not an entry."""
        try:
            raw = json.loads(line)
            seq, when, kind, info = raw["seq"], raw["time"], raw["type"], raw["tech_info"]
            if not (isinstance(seq, int) and isinstance(kind, str) and isinstance(info, str)):
                return None
            t = dt.datetime.fromisoformat(when)
        except (ValueError, TypeError, KeyError):
            return None
        if t.tzinfo is None:
            return None
        return cls(seq, t.astimezone(dt.UTC), kind, info, raw.get("notify") is not False)


def to_jsonl(entries: Iterable[SecurityLogEntry], *, max_bytes: int | None = None) -> bytes:
    """Entries as the JSON-lines file uploaded for ``GetLog(SecurityLog)``.

    With ``max_bytes``, the newest entries that fit (the oldest are left out).
    """
    lines = [e.to_json().encode() + b"\n" for e in entries]
    if max_bytes is not None:
        kept, size = 0, 0
        for line in reversed(lines):
            if size + len(line) > max_bytes:
                break
            size += len(line)
            kept += 1
        lines = lines[len(lines) - kept :]
    return b"".join(lines)


class SecurityLog:
    """The security log in ``directory`` (normally ``<state_dir>/log``)."""

    def __init__(self, directory: Path, limits: SecurityLogLimits | None = None) -> None:
        self.directory = directory
        self.limits = limits or SecurityLogLimits()
        self._next_seq: int | None = None

    @property
    def current(self) -> Path:
        return self.directory / CURRENT

    def append(
        self, type: str, tech_info: str, *, time: dt.datetime, notify: bool = True
    ) -> SecurityLogEntry:
        """Append one event durably (fsynced) and return it; raises ``OSError`` if flash fails."""
        if time.tzinfo is None:
            raise InvalidValue("security log times must be timezone-aware")
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = SecurityLogEntry(
            self._seq(), time.astimezone(dt.UTC), type[:TYPE_MAX], tech_info[:TECH_INFO_MAX], notify
        )
        line = entry.to_json().encode() + b"\n"
        fd = os.open(self.current, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(line) > self.limits.max_file_bytes:
                os.close(fd)
                fd = -1
                self._rotate()
                fd = os.open(self.current, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
                size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # the last append was torn by a power loss
            os.write(fd, line)
            os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)
        if size == 0:
            fsync_dir(self.directory)  # a new segment: make its name durable too
        self._next_seq = entry.seq + 1
        return entry

    def entries(
        self, oldest: dt.datetime | None = None, latest: dt.datetime | None = None
    ) -> list[SecurityLogEntry]:
        """Every readable entry, oldest first, with ``oldest <= time <= latest``."""
        return [
            e
            for e in self._read_all()
            if (oldest is None or e.time >= oldest) and (latest is None or e.time <= latest)
        ]

    def files(self) -> list[Path]:
        """The segments on flash, oldest first, the current one last."""
        if not self.directory.is_dir():
            return []
        old = sorted(
            (int(m.group(1)), p)
            for p in self.directory.iterdir()
            if (m := _SEGMENT.fullmatch(p.name)) and p.is_file()
        )
        current = [self.current] if self.current.is_file() else []
        return [p for _, p in old] + current

    def size(self) -> int:
        """Bytes of flash the log takes now."""
        return sum(p.stat().st_size for p in self.files())

    # -- internals

    def _read_all(self) -> Iterator[SecurityLogEntry]:
        for path in self.files():
            yield from _read(path)

    def _seq(self) -> int:
        if self._next_seq is None:
            last = 0
            for path in reversed(self.files()):  # the newest segment holding an entry
                seqs = [e.seq for e in _read(path)]
                if seqs:
                    last = max(seqs)
                    break
            self._next_seq = last + 1
        return self._next_seq

    def _rotate(self) -> None:
        """Make the current segment an old one (one rename), then drop the oldest ones."""
        first = next(iter(_read(self.current)), None)
        seq = first.seq if first is not None else self._seq()
        os.replace(self.current, self.directory / f"security.{seq:012d}.jsonl")
        old = [p for p in self.files() if p != self.current]
        for path in old[: max(0, len(old) - (self.limits.max_files - 1))]:
            path.unlink(missing_ok=True)
        fsync_dir(self.directory)


def _read(path: Path) -> Iterator[SecurityLogEntry]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if line.strip():
            entry = SecurityLogEntry.parse(line)
            if entry is not None:
                yield entry
