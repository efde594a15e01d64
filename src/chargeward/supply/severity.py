"""Severity of an advisory: from a CVSS vector's base score or a named rating.

    >>> severity_of_cvss("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
    <Severity.CRITICAL: 4>
    >>> Severity.parse("moderate")
    <Severity.MEDIUM: 2>

``UNKNOWN`` ranks above ``CRITICAL``: an advisory without a usable rating blocks a release at
any threshold (fail closed).
"""

from __future__ import annotations

import enum

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError


class Severity(enum.IntEnum):
    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4
    UNKNOWN = 5

    @classmethod
    def parse(cls, name: str) -> Severity:
        """A rating word (GHSA's ``MODERATE`` is ``MEDIUM``); anything else is ``UNKNOWN``."""
        word = name.strip().upper()
        word = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW"}.get(word, word)
        return cls.__members__.get(word, cls.UNKNOWN)

    @property
    def label(self) -> str:
        return self.name.lower()


def severity_of_score(score: float) -> Severity:
    """The CVSS v3/v4 qualitative rating of a base score."""
    if score == 0:
        return Severity.NONE
    if score < 4:
        return Severity.LOW
    if score < 7:
        return Severity.MEDIUM
    if score < 9:
        return Severity.HIGH
    return Severity.CRITICAL


def severity_of_cvss(vector: str, kind: str = "") -> Severity:
    """Base-score rating of a CVSS v2, v3.x or v4 vector; ``UNKNOWN`` if it does not parse."""
    try:
        if vector.startswith("CVSS:3."):
            return severity_of_score(float(CVSS3(vector).base_score))
        if vector.startswith("CVSS:4."):
            return severity_of_score(float(CVSS4(vector).base_score))
        if kind == "CVSS_V2":
            return severity_of_score(float(CVSS2(vector).base_score))
    except (CVSSError, ValueError, KeyError):
        return Severity.UNKNOWN
    return Severity.UNKNOWN


def severity_of_osv(entry_type: str, score: str) -> Severity:
    """One OSV ``severity[]`` entry: a CVSS vector, or a bare number, or a rating word."""
    if entry_type.startswith("CVSS_"):
        try:
            return severity_of_score(float(score))
        except ValueError:
            return severity_of_cvss(score, entry_type)
    return Severity.parse(score)
