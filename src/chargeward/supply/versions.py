"""Version ordering per ecosystem, and OSV range evaluation that fails closed.

    >>> compare("semver", "1.2.3-rc.1", "1.2.3")
    -1
    >>> compare("debian", "1:1.0~rc1-1", "1:1.0-1")
    -1
    >>> compare("pypi", "2.0.post1", "2.0")
    1

A version that a scheme cannot read raises :class:`Unordered`; the caller turns it into an
*indeterminate* verdict, never a clean one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

from packaging.version import InvalidVersion, Version


class Unordered(ValueError):
    """A version cannot be ordered under the scheme (unparseable, or no scheme known)."""


_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)

SemverKey = tuple[int, int, int, tuple[tuple[int, int | str], ...]]


def _semver_key(text: str) -> SemverKey:
    """SemVer 2.0.0 precedence: a release sorts after its pre-releases, build data is ignored."""
    m = _SEMVER.fullmatch(text)
    if m is None:
        raise Unordered(f"{text!r} is not a semantic version")
    pre: tuple[tuple[int, int | str], ...] = ((2, 0),)  # no pre-release: after any pre-release
    if m.group(4):
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m.group(4).split("."))
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), pre


def _sign(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _cmp_semver(a: str, b: str) -> int:
    return _sign(_semver_key(a), _semver_key(b))


def _cmp_pypi(a: str, b: str) -> int:
    try:
        return _sign(Version(a), Version(b))
    except InvalidVersion as e:
        raise Unordered(str(e)) from e


_DEBIAN = re.compile(r"(?:(\d+):)?(\d[A-Za-z0-9.+~-]*?)(?:-([A-Za-z0-9.+~]+))?")


def _deb_order(c: str) -> int:
    # dpkg's order(): '~' before everything, even the end of the string; letters before others.
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _deb_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (character order) and digit runs (numeric)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _deb_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _deb_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return _sign(ca, cb)
            i, j = i + 1, j + 1
        si, sj = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        diff = _sign(int(a[si:i] or "0"), int(b[sj:j] or "0"))
        if diff:
            return diff
    return 0


def _cmp_debian(a: str, b: str) -> int:
    """Debian policy 5.6.12: ``[epoch:]upstream[-revision]`` compared as dpkg does."""
    parts = []
    for text in (a, b):
        m = _DEBIAN.fullmatch(text)
        if m is None or not text.isascii():
            raise Unordered(f"{text!r} is not a Debian version")
        parts.append((int(m.group(1) or 0), m.group(2), m.group(3) or ""))
    (ea, ua, ra), (eb, ub, rb) = parts
    return _sign(ea, eb) or _deb_part(ua, ub) or _deb_part(ra, rb)


#: Version schemes by name.
SCHEMES: dict[str, Callable[[str, str], int]] = {
    "semver": _cmp_semver,
    "pypi": _cmp_pypi,
    "debian": _cmp_debian,
}

#: OSV ecosystem (before any ``:release`` suffix) -> scheme of its ECOSYSTEM ranges.
#: Ecosystems missing here (Maven, Alpine, RubyGems, ...) give indeterminate verdicts.
ECOSYSTEM_SCHEMES: dict[str, str] = {
    "PyPI": "pypi",
    "npm": "semver",
    "crates.io": "semver",
    "Go": "semver",
    "Hex": "semver",
    "Debian": "debian",
    "Ubuntu": "debian",
}


def compare(scheme: str, a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` under ``scheme``."""
    if scheme not in SCHEMES:
        raise Unordered(f"no version rule {scheme!r}")
    return SCHEMES[scheme](a, b)


# Within one version, "introduced" sorts before the events that end a range.
_EVENT_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 1, "limit": 1}


def in_range(scheme: str, version: str, events: Sequence[tuple[str, str]]) -> bool:
    """Whether ``version`` lies in the OSV range given by ``(kind, version)`` events.

    The OSV schema's algorithm: walk the events in version order; ``introduced`` (``"0"``:
    from the beginning) opens, ``fixed`` closes from that version on, ``last_affected``
    closes after that version; a ``limit`` excludes everything at or above it.
    """
    cmp = SCHEMES.get(scheme)
    if cmp is None:
        raise Unordered(f"no version rule {scheme!r}")
    cmp(version, version)  # an unreadable version is indeterminate, even with no events

    def order(x: tuple[str, str], y: tuple[str, str]) -> int:
        x0, y0 = x == ("introduced", "0"), y == ("introduced", "0")
        if x0 or y0:
            return int(y0) - int(x0)
        return cmp(x[1], y[1]) or _EVENT_ORDER[x[0]] - _EVENT_ORDER[y[0]]

    affected = False
    for kind, at in sorted(events, key=functools.cmp_to_key(order)):
        if kind == "introduced" and (at == "0" or cmp(version, at) >= 0):
            affected = True
        elif (kind == "fixed" and cmp(version, at) >= 0) or (
            kind == "last_affected" and cmp(version, at) > 0
        ):
            affected = False
    limits = [at for kind, at in events if kind == "limit" and at != "*"]
    return affected and all(cmp(version, at) < 0 for at in limits)
