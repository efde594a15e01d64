"""Accepted findings as an OpenVEX v0.2.0 document (https://github.com/openvex/spec).

One statement per accepted finding: the advisory (with its aliases), the product (the
component's purl, with the library as a subcomponent when the finding is on a library), and
the status and justification from the allowlist.  OpenVEX has no expiry field; the expiry
and approvers stay in the allowlist and the scan report.

The document is deterministic: its ``timestamp`` is the gate's evaluation time and its
``@id`` a name-based UUID of the content, so the same scan gives the same bytes.

    openvex(result, author="ACME Charging Ltd PSIRT")
    # -> b'{\\n  "@context": "https://openvex.dev/ns/v0.2.0", ...'
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from chargeward.supply.gate import Finding, GateResult, utc_text

OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://chargeward.dev/ns/openvex")


def _statement(finding: Finding) -> dict[str, Any]:
    entry = finding.accepted_by
    assert entry is not None
    product: dict[str, Any] = {
        "@id": finding.component_purl,
        "identifiers": {"purl": finding.component_purl},
    }
    if finding.purl != finding.component_purl:
        product["subcomponents"] = [{"@id": finding.purl, "identifiers": {"purl": finding.purl}}]
    vulnerability: dict[str, Any] = {"name": finding.advisory}
    if finding.aliases:
        vulnerability["aliases"] = list(finding.aliases)
    statement: dict[str, Any] = {
        "vulnerability": vulnerability,
        "products": [product],
        "status": entry.status,
    }
    for key in ("justification", "impact_statement", "action_statement"):
        value = getattr(entry, key)
        if value is not None:
            statement[key] = value
    return statement


def openvex(result: GateResult, *, author: str) -> bytes:
    """The OpenVEX document of ``result``'s accepted findings (canonical JSON, UTF-8)."""
    statements = [_statement(f) for f in result.accepted]
    timestamp = utc_text(result.evaluated_at)
    content = json.dumps([author, timestamp, statements], sort_keys=True).encode()
    document = {
        "@context": OPENVEX_CONTEXT,
        "@id": f"urn:uuid:{uuid.uuid5(_ID_NAMESPACE, hashlib.sha256(content).hexdigest())}",
        "author": author,
        "role": "Document Creator",
        "timestamp": timestamp,
        "version": 1,
        "tooling": "chargeward supply scan",
        "statements": statements,
    }
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
