"""Version ordering per ecosystem (univers), OSV range evaluation, and Git tag names.

    >>> compare("semver", "1.2.3-rc.1", "1.2.3")
    -1
    >>> compare("debian", "1:1.0~rc1-1", "1:1.0-1")
    -1
    >>> compare("pypi", "2.0.post1", "2.0")
    1
    >>> tag_version("OpenSSL_1_1_1w"), tag_version("openssl-3.0.13"), tag_version("curl-8_5_0")
    ('1.1.1w', '3.0.13', '8.5.0')

The orderings are univers' (https://github.com/aboutcode-org/univers): dpkg's for Debian and
Ubuntu, PEP 440 for PyPI, Maven's, RubyGems', NuGet's, Composer's, apk's.  SemVer is checked
against the SemVer 2.0.0 grammar first, because univers coerces loose strings (``1.3.x``)
into versions, and build metadata is dropped before ordering (SemVer 2.0.0 §10).

A version that a scheme cannot read raises :class:`Unordered`; the caller turns it into an
*indeterminate* verdict, never a clean one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from univers.versions import (
    AlpineLinuxVersion,
    ComposerVersion,
    ConanVersion,
    DebianVersion,
    MavenVersion,
    NugetVersion,
    PypiVersion,
    RubygemsVersion,
    SemverVersion,
    Version,
)

from chargeward.errors import InvalidValue


class Unordered(InvalidValue):
    """A version cannot be ordered under the scheme (unparseable, or no scheme known)."""


_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def _semver(text: str) -> Version:
    if _SEMVER.fullmatch(text) is None:
        raise Unordered(f"{text!r} is not a semantic version")
    return SemverVersion(text.removeprefix("v").partition("+")[0])


#: Version schemes by name: each reads a version string into a univers version.
SCHEMES: dict[str, Callable[[str], Version]] = {
    "semver": _semver,
    "pypi": PypiVersion,
    "debian": DebianVersion,
    "maven": MavenVersion,
    "gem": RubygemsVersion,
    "nuget": NugetVersion,
    "composer": ComposerVersion,
    "apk": AlpineLinuxVersion,
    "conan": ConanVersion,
}

#: OSV ecosystem (before any ``:release`` suffix) -> scheme of its ECOSYSTEM ranges.
#: Ecosystems missing here give indeterminate verdicts for their ECOSYSTEM ranges.
ECOSYSTEM_SCHEMES: dict[str, str] = {
    "PyPI": "pypi",
    "npm": "semver",
    "crates.io": "semver",
    "Go": "semver",
    "Hex": "semver",
    "Debian": "debian",
    "Ubuntu": "debian",
    "Maven": "maven",
    "RubyGems": "gem",
    "NuGet": "nuget",
    "Packagist": "composer",
    "Alpine": "apk",
    "ConanCenter": "conan",
}


@functools.lru_cache(maxsize=1 << 14)
def _read(scheme: str, text: str) -> Version:
    reader = SCHEMES.get(scheme)
    if reader is None:
        raise Unordered(f"no version rule {scheme!r}")
    if not text.isascii() or not text.strip():
        raise Unordered(f"{text!r} is not a {scheme} version")
    try:
        return reader(text)
    except Unordered:
        raise
    except (ValueError, TypeError, AttributeError, IndexError) as e:  # univers' InvalidVersion
        raise Unordered(f"{text!r} is not a {scheme} version") from e


def compare(scheme: str, a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` under ``scheme``."""
    x, y = _read(scheme, a), _read(scheme, b)
    return int(x > y) - int(x < y)


# Within one version, "introduced" sorts before the events that end a range.
_EVENT_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 1, "limit": 1}


def in_range(scheme: str, version: str, events: Sequence[tuple[str, str]]) -> bool:
    """Whether ``version`` lies in the OSV range given by ``(kind, version)`` events.

    The OSV schema's algorithm: walk the events in version order; ``introduced`` (``"0"``:
    from the beginning) opens, ``fixed`` closes from that version on, ``last_affected``
    closes after that version; a ``limit`` excludes everything at or above it.
    """
    _read(scheme, version)  # an unreadable version is indeterminate, even with no events

    def cmp(a: str, b: str) -> int:
        return compare(scheme, a, b)

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


# -- Git tags -------------------------------------------------------------------------------
# OSV lists the tags a GIT range covers under their names in the repository: openssl-3.0.13,
# OpenSSL_1_1_1w, curl-8_5_0, v1.3.1, 1_36_1, mutt-2-2-10-rel.  A version is compared with
# them after both are brought to one spelling: project prefix dropped, "_" and "-" as ".".

# The version starts at the first digit at the start or after a separator (or a "v" there).
_TAG_START = re.compile(r"(?:^|(?<=[-_/.])|(?<=^[vV])|(?<=[-_/.][vV]))\d")
_NUMERIC = re.compile(r"\d+(?:\.\d+)*")


def canonical(version: str) -> str:
    """A version in the spelling tags are compared in: lower case, ``.`` as separator."""
    text = version.strip().lower().removeprefix("v")
    return re.sub(r"[-_.]+", ".", text).strip(".")


def tag_version(tag: str) -> str | None:
    """The version a release tag names (canonical spelling), or None if it names none."""
    name = tag.strip().removeprefix("refs/tags/")
    start = _TAG_START.search(name)
    if start is None:
        return None
    return canonical(name[start.start() :]) or None


def leading_numbers(version: str) -> str | None:
    """The dotted numbers a canonical version starts with: ``3.0.13`` of ``3.0.13.acme1``,
    ``1.1.1`` of ``1.1.1w``, ``1.2.12.1`` of ``1.2.12.1`` (``1.2.12-1``: a packaging suffix
    reads as one more number); None if it does not start with a number."""
    m = _NUMERIC.match(version)
    return m.group(0) if m else None


def numeric_order(a: str, b: str) -> int | None:
    """-1, 0 or 1 for two plain dotted numbers (``3.0.13``); None for anything else."""
    if not (_NUMERIC.fullmatch(a) and _NUMERIC.fullmatch(b)):
        return None
    return compare("pypi", a, b)  # PEP 440 release segments order as numeric tuples
