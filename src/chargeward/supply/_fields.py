"""Reading TOML and JSON input field by field, with errors that name the file and field path.

Every supply-chain input (component list, OSV advisory, allowlist) is read through a
:class:`Fields` view, so a bad value is reported as
``components.toml: components[2].libraries[0].purl: not a package URL`` and never as a
traceback.

    >>> doc = read_document(b'name = "x"\\n[[items]]\\nid = 1\\n', "list.toml")
    >>> doc.text("name")
    'x'
    >>> doc.tables("items")[0].text("id")
    Traceback (most recent call last):
    chargeward.errors.SupplyChainError: list.toml: items[0].id: must be a string, not int
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from chargeward import strictjson
from chargeward.errors import SupplyChainError
from chargeward.fileio import read_capped

SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def read_document(
    data: bytes, source: str, *, max_bytes: int = 1 << 20, as_json: bool | None = None
) -> Fields:
    """Parse ``data`` as JSON or TOML (by default: JSON if ``source`` ends in ``.json``).

    The document's root must be a table; JSON objects must not repeat a key.
    """
    if as_json is None:
        as_json = source.lower().endswith(".json")
    if len(data) > max_bytes:
        raise SupplyChainError(f"{source}: larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SupplyChainError(f"{source}: not UTF-8 text ({e.reason})") from e
    try:
        value = strictjson.loads(data) if as_json else tomllib.loads(text)
    except (ValueError, RecursionError) as e:
        # strictjson's and tomllib's errors are ValueErrors naming the key or line/column.
        raise SupplyChainError(f"{source}: malformed document: {e}") from e
    if not isinstance(value, dict):
        raise SupplyChainError(f"{source}: the document must be a table/object")
    return Fields(source, "", value)


def read_input(path: Path, max_bytes: int) -> bytes:
    """The bytes of an input file (refused above ``max_bytes``), or a :class:`SupplyChainError`."""
    return read_capped(path, max_bytes, error=SupplyChainError)


def _kind(value: object) -> str:
    name = type(value).__name__
    return {"dict": "table", "str": "string"}.get(name, name)


class Fields:
    """One table of an input document, with its path for error messages."""

    def __init__(self, source: str, path: str, value: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self.value = value

    def _path(self, key: str | None) -> str:
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def where(self, key: str | None = None) -> str:
        """``source: path.key`` for messages."""
        path = self._path(key)
        return f"{self.source}: {path}" if path else self.source

    def error(self, key: str | None, message: str) -> SupplyChainError:
        return SupplyChainError(f"{self.where(key)}: {message}")

    def only(self, *allowed: str) -> None:
        """Refuse keys not in ``allowed`` (a misspelt ``pinned`` must not pass silently)."""
        for key in self.value:
            if key not in allowed:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise self.error(key, f"unknown field{hint}")

    def _get(self, key: str, kind: type, required: bool) -> Any:
        if key not in self.value:
            if required:
                raise self.error(key, "missing")
            return None
        value = self.value[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be a {_kind(kind())}, not {_kind(value)}")
        return value

    def optional_text(self, key: str) -> str | None:
        value: str | None = self._get(key, str, False)
        if value is not None and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def text(self, key: str) -> str:
        value = self.optional_text(key)
        if value is None:
            raise self.error(key, "missing")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value: bool | None = self._get(key, bool, False)
        return default if value is None else value

    def texts(self, key: str) -> list[str]:
        """A list of non-empty strings (absent: empty list)."""
        values: list[Any] = self._get(key, list, False) or []
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise self.error(f"{key}[{i}]", "must be a non-empty string")
        return values

    def table(self, key: str, *, required: bool = False) -> Fields | None:
        value: dict[str, Any] | None = self._get(key, dict, required)
        if value is None:
            return None
        return Fields(self.source, self._path(key), value)

    def tables(self, key: str, *, required: bool = False) -> list[Fields]:
        values: list[Any] = self._get(key, list, required) or []
        result = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.error(f"{key}[{i}]", f"must be a table, not {_kind(value)}")
            result.append(Fields(self.source, self._path(f"{key}[{i}]"), value))
        return result

    def sha256(self, key: str) -> str | None:
        """An optional SHA-256 hex digest, returned in lower case."""
        value = self.optional_text(key)
        if value is not None and not SHA256_RE.fullmatch(value):
            raise self.error(key, "must be 64 hexadecimal digits (SHA-256)")
        return None if value is None else value.lower()

    def purl(self, key: str) -> PackageURL:
        """A required package URL (``pkg:type/namespace/name@version``)."""
        value = self.text(key)
        try:
            return PackageURL.from_string(value)
        except ValueError as e:
            raise self.error(key, f"not a package URL: {e}") from e
