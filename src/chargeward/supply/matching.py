"""Does an advisory affect a package?  Package URL to OSV package, then version to verdict.

A package matches an OSV ``affected[]`` entry by the entry's ``package.purl`` (type,
namespace and name; version ignored) when it has one, else by ecosystem and name, the purl
type mapped to the OSV ecosystem (``pypi`` -> ``PyPI``, ``deb`` -> ``Debian``, ...).

The verdict fails closed:

* the version is listed in ``versions``                            -> affected
* a SEMVER or ECOSYSTEM range contains it                          -> affected
* a range cannot be evaluated (GIT range with no ``versions`` list,
  unknown range type, ecosystem without a version rule, unreadable
  version)                                                         -> indeterminate
* otherwise                                                        -> not affected (``None``)

GIT ranges are covered by the ``versions`` list (upstream tags) when there is one: a commit
graph is not available offline.

    >>> match(advisory, "pkg:pypi/jinja2@3.1.2", "3.1.2")  # doctest: +SKIP
    Match(status='affected', reason='3.1.2 in ECOSYSTEM range introduced 0, fixed 3.1.3', ...)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from packageurl import PackageURL

from chargeward.supply.advisories import Advisory, AffectedPackage, Range
from chargeward.supply.severity import Severity
from chargeward.supply.versions import ECOSYSTEM_SCHEMES, Unordered, in_range

Status = Literal["affected", "indeterminate"]

#: purl type -> OSV ecosystem.
PURL_ECOSYSTEMS: dict[str, str] = {
    "pypi": "PyPI",
    "npm": "npm",
    "cargo": "crates.io",
    "golang": "Go",
    "maven": "Maven",
    "deb": "Debian",
    "apk": "Alpine",
    "conan": "ConanCenter",
    "github": "GIT",
    "hex": "Hex",
    "gem": "RubyGems",
    "nuget": "NuGet",
}


@dataclass(frozen=True)
class Match:
    """An advisory affects (or may affect) a package: why, and how severely."""

    status: Status
    reason: str
    severity: Severity


@functools.lru_cache(maxsize=1 << 16)
def purl_identity(purl: str) -> str:
    """A package URL without version, qualifiers and subpath: the package itself."""
    p = PackageURL.from_string(purl)
    identity: str = PackageURL(type=p.type, namespace=p.namespace, name=p.name).to_string()
    return identity


def _ecosystem(purl: PackageURL) -> str | None:
    if purl.type == "deb" and purl.namespace == "ubuntu":
        return "Ubuntu"
    return PURL_ECOSYSTEMS.get(purl.type)


def _osv_name(purl: PackageURL) -> str:
    ns = purl.namespace
    if purl.type == "maven" and ns:
        return f"{ns}:{purl.name}"
    if purl.type in ("npm", "golang") and ns:
        return f"{ns}/{purl.name}"
    if purl.type == "github":
        return f"https://github.com/{ns}/{purl.name}"
    return str(purl.name)


def _normal_name(ecosystem: str, name: str) -> str:
    if ecosystem == "PyPI":
        return re.sub(r"[-_.]+", "-", name).lower()
    if ecosystem == "GIT":
        return name.lower().removesuffix("/").removesuffix(".git")
    return name


def _base(ecosystem: str) -> str:
    return ecosystem.partition(":")[0]  # "Debian:12" -> "Debian"


@functools.lru_cache(maxsize=1 << 12)
def _osv_package(purl: str) -> tuple[str, str] | None:
    """``(ecosystem, normalised name)`` of a package URL, if its type has an OSV ecosystem."""
    p = PackageURL.from_string(purl)
    ecosystem = _ecosystem(p)
    return None if ecosystem is None else (ecosystem, _normal_name(ecosystem, _osv_name(p)))


def package_matches(affected: AffectedPackage, purl: str) -> bool:
    """Whether ``affected`` names the package of ``purl``."""
    if affected.purl is not None:
        return purl_identity(affected.purl) == purl_identity(purl)
    package = _osv_package(purl)
    if package is None or package[0] != _base(affected.ecosystem):
        return False
    return package[1] == _normal_name(package[0], affected.name)


def _describe(r: Range) -> str:
    return f"{r.type} range " + ", ".join(f"{kind} {at}" for kind, at in r.events)


def verdict(affected: AffectedPackage, version: str) -> tuple[Status, str] | None:
    """Whether ``version`` is affected per one ``affected[]`` entry (see the module notes)."""
    if version in affected.versions:
        return "affected", f"{version} listed in versions"
    if not affected.ranges and not affected.versions:
        return "indeterminate", "the advisory lists neither versions nor ranges"
    unsure = []
    for r in affected.ranges:
        if r.type == "GIT":
            if not affected.versions:
                unsure.append("GIT range without a versions list (no commit graph offline)")
            continue
        scheme = "semver" if r.type == "SEMVER" else None
        if r.type == "ECOSYSTEM":
            scheme = ECOSYSTEM_SCHEMES.get(_base(affected.ecosystem))
            if scheme is None:
                unsure.append(f"no version rule for ecosystem {affected.ecosystem}")
                continue
        if scheme is None:
            unsure.append(f"unknown range type {r.type}")
            continue
        try:
            if in_range(scheme, version, r.events):
                return "affected", f"{version} in {_describe(r)}"
        except Unordered as e:
            unsure.append(f"{_describe(r)} cannot be evaluated: {e}")
    if unsure:
        return "indeterminate", "; ".join(unsure)
    return None


def match(advisory: Advisory, purl: str, version: str) -> Match | None:
    """The strongest verdict of ``advisory`` on the package ``purl`` at ``version``."""
    if advisory.withdrawn:
        return None
    found: list[tuple[Status, str, Severity]] = []
    for affected in advisory.affected:
        if package_matches(affected, purl):
            result = verdict(affected, version)
            if result is not None:
                found.append((*result, advisory.severity_for(affected)))
    if not found:
        return None
    status: Status = "affected" if any(s == "affected" for s, _, _ in found) else "indeterminate"
    reasons = "; ".join(dict.fromkeys(r for s, r, _ in found if s == status))
    return Match(status, reasons, max(sev for _, _, sev in found))
