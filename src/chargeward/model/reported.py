"""How stations report a release's version: exact strings and one pattern per hardware model.

Third-party firmware seldom reports the release's own version in BootNotification
``chargingStation.firmwareVersion``: release 1.1.0 may boot as ``TP-FW 1.1.0-b7``.  A release
may declare, per model, the exact strings its stations report and one regular expression
(matched in full).  :func:`reports_release` is the one decision drift detection, campaign
success and exposure take (ADR 0037); the release's own version always counts.

    declared = parse_option("reported_version", ["AC22=TP-FW 1.1.0-b7"])
    reports_release(Brings("1.1.0", declared.to_json()), "AC22", "TP-FW 1.1.0-b7")
    # -> True
    reports_release(Brings("1.1.0", declared.to_json()), "DC50", "TP-FW 1.1.0-b7")
    # -> False: only AC22 declares it
    reports_release(Brings("1.1.0", None), "AC22", "1.1.0")
    # -> True: undeclared, the release's version

A pattern is untrusted input evaluated on every boot, so its dialect is cut down to what
cannot backtrack without bound (:func:`check_pattern`): at most :data:`MAX_PATTERN_CHARS`
characters; no group references, look-arounds, conditionals or inline flags; no repetition or
alternatives inside a repetition; at most :data:`MAX_VARIABLE_REPEATS` variable repetitions.
It is only ever matched against a string of at most 50 characters (OCPP's firmwareVersion).
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from chargeward.errors import InvalidValue
from chargeward.model.firmware import MAX_MODEL_CHARS, MAX_VERSION_CHARS

MAX_PATTERN_CHARS = 200
MAX_VARIABLE_REPEATS = 4
MAX_STRINGS_PER_MODEL = 16
MAX_MODELS = 64

# The parser of the ``re`` module: the only way to see a pattern's structure before trusting
# it.  Private, hence typed loosely; its opcodes are stable since Python 3.11.
_PARSER: Any = importlib.import_module("re._parser")
_CONSTANTS: Any = importlib.import_module("re._constants")
_REPEATS = {_CONSTANTS.MAX_REPEAT, _CONSTANTS.MIN_REPEAT}
_ALLOWED = {
    _CONSTANTS.LITERAL,
    _CONSTANTS.NOT_LITERAL,
    _CONSTANTS.ANY,
    _CONSTANTS.IN,
    _CONSTANTS.BRANCH,
    _CONSTANTS.SUBPATTERN,
    _CONSTANTS.AT,
    *_REPEATS,
}


class DeclaresReports(Protocol):
    """What :func:`reports_release` reads of a release (a ``releases`` row has both)."""

    @property
    def version(self) -> str: ...

    @property
    def reported_versions(self) -> str | None: ...


class Brings(NamedTuple):
    """A release's version and declaration without its row (prefetched columns)."""

    version: str
    reported_versions: str | None


@dataclass(frozen=True)
class ModelReports:
    """What one model's stations report for the release."""

    versions: tuple[str, ...] = ()
    pattern: str | None = None

    def matches(self, reported: str) -> bool:
        if reported in self.versions:
            return True
        return self.pattern is not None and _compiled(self.pattern).fullmatch(reported) is not None


@dataclass(frozen=True)
class ReportedVersions:
    """A release's declaration: model -> :class:`ModelReports` (empty: nothing declared)."""

    models: Mapping[str, ModelReports] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.models)

    def merged(self, other: ReportedVersions) -> ReportedVersions:
        """Both declarations: strings joined, a pattern from whichever declares one."""
        out = dict(self.models)
        for model, theirs in other.models.items():
            mine = out.get(model, ModelReports())
            if mine.pattern is not None and theirs.pattern is not None:
                raise InvalidValue(f"{model}: one pattern per model")
            versions = tuple(dict.fromkeys((*mine.versions, *theirs.versions)))
            if len(versions) > MAX_STRINGS_PER_MODEL:
                raise InvalidValue(f"{model}: at most {MAX_STRINGS_PER_MODEL} strings per model")
            out[model] = ModelReports(versions, mine.pattern or theirs.pattern)
        if len(out) > MAX_MODELS:
            raise InvalidValue(f"at most {MAX_MODELS} models")
        return ReportedVersions(out)

    def document(self) -> dict[str, Any]:
        """The JSON form the API shows: ``{model: {"versions": [...], "pattern": ...}}``."""
        return {
            m: {"versions": list(r.versions), "pattern": r.pattern}
            for m, r in sorted(self.models.items())
        }

    def to_json(self) -> str | None:
        """Canonical JSON for storage; None when nothing is declared."""
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")) if self else None

    def check_models(self, release_models: Iterable[str]) -> None:
        """Refuse a model the release is not built for (a typo would otherwise match nothing)."""
        known = set(release_models)
        for model in sorted(self.models):
            if model not in known:
                raise InvalidValue(
                    f"model {model!r} is not one of the release's hardware models "
                    f"({', '.join(sorted(known))})"
                )


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is a regular expression in the safe dialect, else InvalidValue."""
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidValue(f"a pattern has 1-{MAX_PATTERN_CHARS} characters")
    try:
        tree = _PARSER.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise InvalidValue(f"{pattern!r} is not a regular expression: {e}") from e
    if tree.state.flags & ~_CONSTANTS.SRE_FLAG_UNICODE:
        raise InvalidValue(f"{pattern!r} sets inline flags")
    variable = _walk(pattern, list(tree), inside_repeat=False)
    if variable > MAX_VARIABLE_REPEATS:
        raise InvalidValue(
            f"{pattern!r} has {variable} variable repetitions, at most {MAX_VARIABLE_REPEATS}"
        )
    return pattern


def _walk(pattern: str, items: list[tuple[Any, Any]], *, inside_repeat: bool) -> int:
    """Check a parsed (sub)pattern; returns how many variable repetitions it holds."""
    variable = 0
    for op, arg in items:
        if op not in _ALLOWED:
            raise InvalidValue(
                f"{pattern!r} uses {str(op).lower()}: only literals, classes, groups, "
                "alternatives, anchors and repetition are allowed"
            )
        if op == _CONSTANTS.SUBPATTERN:
            _group, add_flags, del_flags, sub = arg
            if add_flags or del_flags:
                raise InvalidValue(f"{pattern!r} sets inline flags")
            variable += _walk(pattern, list(sub), inside_repeat=inside_repeat)
        elif op == _CONSTANTS.BRANCH:
            if inside_repeat:
                raise InvalidValue(f"{pattern!r} repeats alternatives (it could backtrack long)")
            variable += sum(_walk(pattern, list(b), inside_repeat=inside_repeat) for b in arg[1])
        elif op in _REPEATS:
            low, high, sub = arg
            if inside_repeat and high > 1:
                raise InvalidValue(f"{pattern!r} repeats a repetition (it could backtrack long)")
            variable += (low != high) + _walk(pattern, list(sub), inside_repeat=high > 1)
    return variable


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(check_pattern(pattern))


def _check_reported(value: str) -> str:
    if not value or len(value) > MAX_VERSION_CHARS or not value.isprintable():
        raise InvalidValue(f"a reported version has 1-{MAX_VERSION_CHARS} printable characters")
    return value


def _split(item: str) -> tuple[str, str]:
    model, sep, value = item.partition("=")
    if not sep or not model.strip() or len(model) > MAX_MODEL_CHARS:
        raise InvalidValue(f"{item!r} is not MODEL=VALUE (model of 1-{MAX_MODEL_CHARS} characters)")
    return model, value


def parse_option(name: str, items: Iterable[str]) -> ReportedVersions:
    """``MODEL=STRING`` items (``name`` ``reported_version``) or ``MODEL=REGEX`` items
    (``reported_version_pattern``), as the CLI and API take them.  Errors name ``name``."""
    out = ReportedVersions()
    try:
        for item in items:
            model, value = _split(item)
            if name.endswith("pattern"):
                one = ModelReports(pattern=check_pattern(value))
            else:
                one = ModelReports(versions=(_check_reported(value),))
            out = out.merged(ReportedVersions({model: one}))
    except InvalidValue as e:
        raise InvalidValue(f"{name}: {e}") from e
    return out


@functools.lru_cache(maxsize=256)
def from_json(text: str) -> ReportedVersions:
    """A stored declaration (:meth:`ReportedVersions.to_json`), checked again, parsed once."""
    doc = json.loads(text)
    models: dict[str, ModelReports] = {}
    for model, entry in doc.items():
        pattern = entry.get("pattern")
        models[model] = ModelReports(
            tuple(_check_reported(v) for v in entry.get("versions", [])),
            check_pattern(pattern) if pattern is not None else None,
        )
    return ReportedVersions(models)


def reports_release(release: DeclaresReports, model: str | None, reported: str | None) -> bool:
    """Whether a station of ``model`` reporting ``reported`` (BootNotification
    firmwareVersion) runs ``release``: the release's version, or what it declares for the
    model."""
    if not reported or len(reported) > MAX_VERSION_CHARS:
        return False
    if reported == release.version:
        return True
    if release.reported_versions is None or model is None:
        return False
    declared = from_json(release.reported_versions).models.get(model)
    return declared is not None and declared.matches(reported)
