"""Does an advisory affect a package?  Package URL to OSV package, then version to verdict.

A package matches an OSV ``affected[]`` entry by the entry's ``package.purl`` (type,
namespace and name; version ignored) when it has one, else by ecosystem and name, the purl
type mapped to the OSV ecosystem (``pypi`` -> ``PyPI``, ``deb`` -> ``Debian``, ...).  C
libraries are also found through the repository of the entry's GIT ranges (OSV.dev's
NVD-converted records name no package at all; OSS-Fuzz records name the project): a
``pkg:github`` purl or a ``vcs_url`` qualifier by the whole repository URL, a
``pkg:generic`` purl by the repository's last path segment (``pkg:generic/openssl`` is
``https://github.com/openssl/openssl``).

The verdict fails closed:

* the version is listed in ``versions``                            -> affected
* a SEMVER or ECOSYSTEM range contains it                          -> affected
* a GIT range's ``versions`` (tags) name it (``openssl-3.0.13``,
  or ``3.0.13.0``: the same release numbers)                       -> affected
* a range cannot be evaluated (GIT range with no usable versions
  list, a version that begins with a listed tag's numbers and goes
  on (``1.2.12-1``, ``3.0.13_1``, ``3.0.13-acme1``, ``1.1.1x``), an
  open GIT range and a version past its last tag, unknown range
  type, ecosystem without a version rule, unreadable version)      -> indeterminate
* otherwise                                                        -> not affected (``None``)

A commit graph is not available offline, so a GIT range is judged by the tags OSV lists for
it; a version that is not among them is clean only when it is a tag-like version that the
list would name and the range is closed.

    match(advisory, "pkg:pypi/jinja2@3.1.2", "3.1.2")
    # -> Match(status='affected', reason='3.1.2 in ECOSYSTEM range introduced 0, fixed 3.1.3', ...)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from packageurl import PackageURL

from chargeward.supply.advisories import Advisory, AffectedPackage, Range
from chargeward.supply.severity import Severity
from chargeward.supply.versions import (
    ECOSYSTEM_SCHEMES,
    Unordered,
    canonical,
    in_range,
    leading_numbers,
    numeric_order,
    tag_version,
)

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


#: Ecosystems whose entries may also be found through their GIT ranges' repository: source
#: code with no package registry (none: NVD-converted records).
REPOSITORY_ECOSYSTEMS = ("", "GIT", "OSS-Fuzz")


def _repo_key(url: str) -> str:
    """``github.com/openssl/openssl`` for any spelling of that repository's URL."""
    text = url.strip().lower().removeprefix("git+")
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.sub(r"^[^@/]*@", "", text).replace(":", "/", 1) if "@" in text else text
    return text.removeprefix("www.").rstrip("/").removesuffix(".git")


@functools.lru_cache(maxsize=1 << 12)
def _purl_repo(purl: str) -> tuple[str | None, str | None]:
    """``(repository key, bare name)`` a package URL can be matched to a repository by."""
    p = PackageURL.from_string(purl)
    qualifiers = p.qualifiers if isinstance(p.qualifiers, dict) else {}
    vcs = qualifiers.get("vcs_url")
    if vcs:
        return _repo_key(vcs), None
    if p.type == "github" and p.namespace:
        return f"github.com/{p.namespace.lower()}/{p.name.lower()}", None
    if p.type == "generic":
        return None, str(p.name).lower()
    return None, None


def repository_matches(repo: str, purl: str) -> bool:
    """Whether the package of ``purl`` is built from the repository ``repo``."""
    key, name = _purl_repo(purl)
    repo_key = _repo_key(repo)
    if key is not None:
        return key == repo_key
    return name is not None and repo_key.rpartition("/")[2] == name


def package_matches(affected: AffectedPackage, purl: str) -> bool:
    """Whether ``affected`` names the package of ``purl`` (see the module notes)."""
    if affected.purl is not None and purl_identity(affected.purl) == purl_identity(purl):
        return True
    if affected.ecosystem in REPOSITORY_ECOSYSTEMS and any(
        repository_matches(repo, purl) for repo in affected.repos
    ):
        return True
    if affected.purl is not None or not affected.ecosystem:
        return False
    package = _osv_package(purl)
    if package is None or package[0] != _base(affected.ecosystem):
        return False
    return package[1] == _normal_name(package[0], affected.name)


def _describe(r: Range) -> str:
    return f"{r.type} range " + ", ".join(f"{kind} {at}" for kind, at in r.events)


def _git_verdict(
    affected: AffectedPackage, ranges: list[Range], version: str
) -> tuple[Status, str] | None:
    """GIT ranges, judged by the tags OSV lists for them (``versions``)."""
    where = ", ".join(dict.fromkeys(r.repo or "?" for r in ranges))
    if not affected.versions:
        return "indeterminate", f"GIT range without a versions list ({where}; no commit graph)"
    tags = {t: v for t in affected.versions if (v := tag_version(t)) is not None}
    if not tags:
        return "indeterminate", f"GIT range in {where}: its versions name no release tag"
    wanted = canonical(version)
    for tag, listed in tags.items():
        if listed == wanted:
            return "affected", f"{version} listed as tag {tag} of {where}"
    lead = leading_numbers(wanted)
    if lead is None:
        return "indeterminate", f"GIT range in {where}: {version!r} is not a release version"
    numbers = {tag: n for tag, listed in tags.items() if (n := leading_numbers(listed))}
    for tag, theirs in numbers.items():
        if lead == wanted and theirs == tags[tag] and numeric_order(lead, theirs) == 0:
            return "affected", f"{version} is release {theirs}, listed as tag {tag} of {where}"
    for tag, theirs in numbers.items():
        if numeric_order(lead, theirs) == 0 or lead.startswith(theirs + "."):
            # 1.2.12-1 (read 1.2.12.1), 3.0.13_1, 3.0.13-acme1, 1.1.1x beside 1.1.1w: a build
            # of a listed release, or a release the list cannot place without the commit graph.
            return "indeterminate", (
                f"{version} is not listed, but it begins with tag {tag} of {where}"
            )
    if any(r.open_ended for r in ranges):
        orders = [numeric_order(lead, theirs) for theirs in numbers.values()]
        if not orders or all(o is not None and o > 0 for o in orders):
            return "indeterminate", (
                f"GIT range in {where} has no fix: {version} is past its last listed tag"
            )
    return None


def verdict(affected: AffectedPackage, version: str) -> tuple[Status, str] | None:
    """Whether ``version`` is affected per one ``affected[]`` entry (see the module notes)."""
    if version in affected.versions:
        return "affected", f"{version} listed in versions"
    if not affected.ranges and not affected.versions:
        return "indeterminate", "the advisory lists neither versions nor ranges"
    unsure = []
    git = [r for r in affected.ranges if r.type == "GIT"]
    if git:
        result = _git_verdict(affected, git, version)
        if result is not None and result[0] == "affected":
            return result
        if result is not None:
            unsure.append(result[1])
    for r in affected.ranges:
        if r.type == "GIT":
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
