"""The charger's diagnostics snapshot, uploaded for ``GetLog(DiagnosticsLog)`` (OCPP N01).

    report = snapshot(StateDir(Path("charger-1")), now=now, booted=booted,
                      security_log=log, settings={"connectors": 1})
    report["boot_control"]["active"]
    # -> 'a'

What it holds: identity, the running image, boot control, both slots, the install state, the
last firmware status, rollback and time floors, trust anchors (subject and fingerprint) and
the size of the security log.  What it never holds: the BasicAuthPassword or anything else
under ``secure/`` but the floors and the anchors' public names; URLs lose user info and query.
A part that cannot be read is reported as ``{"error": ...}``: a diagnostics upload is most
wanted when something on flash is wrong.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chargeward.agent.bootloader import Booted
from chargeward.agent.security_log import SecurityLog
from chargeward.agent.state import SLOTS, StateDir
from chargeward.crypto.pki import certificate_fingerprint, load_certificate

FORMAT = "chargeward.diagnostics/1"


def public_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment (they may carry credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _safe(part: Callable[[], Any]) -> Any:
    try:
        return part()
    except Exception as e:  # a broken file is itself a diagnosis
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def _slot(state: StateDir, slot: str) -> dict[str, Any] | None:
    info = state.slot_info(slot)
    if info is None:
        return None
    return {
        "component": info.component,
        "version": info.version,
        "security_version": info.security_version,
        "sha256": info.sha256,
        "length": info.length,
        "signing_certificate_sha256": certificate_fingerprint(
            load_certificate(info.signing_certificate)
        ),
    }


def _install(state: StateDir) -> dict[str, Any] | None:
    inst = state.install_state()
    return asdict(inst) if inst is not None else None


def _time(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat() if t is not None else None


def snapshot(
    state: StateDir,
    *,
    now: dt.datetime,
    booted: Booted | None,
    security_log: SecurityLog,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The snapshot as a JSON-ready dict (see the module docstring)."""
    return {
        "format": FORMAT,
        "generated_at": _time(now),
        "station": _safe(lambda: asdict(state.identity())),
        "running": (
            None
            if booted is None
            else {
                "slot": booted.slot,
                "version": booted.header.version,
                "security_version": booted.header.security_version,
                "fell_back": booted.fell_back,
                "fallback_reason": booted.fallback_reason,
            }
        ),
        "boot_control": _safe(lambda: asdict(state.boot_control())),
        "slots": {slot: _safe(functools.partial(_slot, state, slot)) for slot in SLOTS},
        "install": _safe(lambda: _install(state)),
        "last_firmware_status": _safe(state.last_status),
        "rollback_floor": _safe(state.rollback_floor),
        "time_floor": _safe(lambda: _time(state.time_floor())),
        "trust_anchors": _safe(
            lambda: [
                {"subject": c.subject.rfc4514_string(), "sha256": certificate_fingerprint(c)}
                for c in state.trust_anchors()
            ]
        ),
        "tuf_repository_checks": _safe(lambda: state.tuf_bootstrap_root() is not None),
        "security_log": _safe(
            lambda: {
                "files": len(security_log.files()),
                "bytes": security_log.size(),
                "entries": len(security_log.entries()),
            }
        ),
        "settings": settings,
    }
