"""Proxy mode's settings in the database: per station and per site, and a station's stored
upstream credentials (ADR 0040).

A station's own setting wins over its site's, a site's over the server's ``--upstream``
options.  The upstream password is sealed (AES-256-GCM, :mod:`chargeward.crypto.sealing`)
under a key file in the server's data directory, created ``0600`` at first use, bound to the
station's id; no API returns it and no log or audit entry holds it::

    key = load_or_create_key(data_dir)
    await update(s, STATION, "CP-1", {"upstream_firmware_policy": "refuse"}, actor=..., now=...)
    await set_credentials(s, "CP-1", "CP-1", "s3cret", key=key, actor=..., now=...)
    await resolve(s, "CP-1", key)    # StationSettings(url_template=..., firmware_policy=...)
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chargeward import audit
from chargeward.crypto import sealing
from chargeward.errors import BundleError, ConfigError, IntegrityError, NotFound
from chargeward.server.proxy.policy import FirmwarePolicy
from chargeward.server.proxy.upstream import StationSettings, check_url_template
from chargeward.server.store.proxy_tables import SiteUpstream, StationUpstream
from chargeward.server.store.tables import Site, Station

LOG = logging.getLogger("chargeward.proxy")
KEY_FILE = "upstream-credentials.key"
STATION, SITE = "station", "site"
FIELDS = {"upstream_url": "url_template", "upstream_firmware_policy": "firmware_policy"}
MAX_USERNAME = 64
MAX_PASSWORD = 128
CREDENTIALS_ACTION = "station.upstream_credentials_set"


def load_or_create_key(data_dir: Path) -> bytes:
    """The sealing key of stored upstream passwords: ``data_dir/upstream-credentials.key``,
    32 random bytes made at first use with mode 0600; a key file others may read is refused."""
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} must be readable by its owner only (chmod 600)") from None
        key = path.read_bytes()
        if len(key) != sealing.KEY_SIZE:
            raise ConfigError(f"{path} is not a {sealing.KEY_SIZE}-byte key") from None
        return key
    key = secrets.token_bytes(sealing.KEY_SIZE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _aad(station_id: str) -> bytes:
    return b"chargeward/upstream-credentials|" + station_id.encode()


def check_field(name: str, value: object) -> str | None:
    """A proxy setting as stored; BundleError naming the field when it is not one."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BundleError(f"{name}: must be a string or null")
    if name == "upstream_firmware_policy":
        try:
            return FirmwarePolicy(value).value
        except ValueError:
            options = ", ".join(p.value for p in FirmwarePolicy)
            raise BundleError(f"{name}: {value[:40]!r} is not one of {options}") from None
    if name == "upstream_url":
        try:
            return check_url_template(value)
        except ConfigError as e:
            raise BundleError(f"{name}: {e}") from e
    raise BundleError(f"{name}: not a proxy setting")


async def _row(
    s: AsyncSession, scope: str, target_id: str, now: dt.datetime
) -> StationUpstream | SiteUpstream:
    if scope == STATION:
        if await s.get(Station, target_id) is None:
            raise NotFound(f"no station {target_id!r}")
        row = await s.get(StationUpstream, target_id)
        if row is None:
            row = StationUpstream(station_id=target_id, updated_at=now)
            s.add(row)
        return row
    if await s.get(Site, target_id) is None:
        raise NotFound(f"no site {target_id!r}")
    site_row = await s.get(SiteUpstream, target_id)
    if site_row is None:
        site_row = SiteUpstream(site_id=target_id, updated_at=now)
        s.add(site_row)
    return site_row


async def update(
    s: AsyncSession,
    scope: str,
    target_id: str,
    changes: Mapping[str, Any],
    *,
    actor: str,
    now: dt.datetime,
) -> None:
    """Set ``upstream_url`` / ``upstream_firmware_policy`` (None: the next level's) of a
    station or site; audited like its other registry fields (``{field: {from, to}}``)."""
    if not changes:
        return
    checked = {name: check_field(name, value) for name, value in changes.items()}
    row = await _row(s, scope, target_id, now)
    diff: dict[str, Any] = {}
    for name, value in checked.items():
        old = getattr(row, FIELDS[name])
        if old != value:
            setattr(row, FIELDS[name], value)
            diff[name] = {"from": old, "to": value}
    if not diff:
        return
    row.updated_at = now
    action, target = (
        ("station.registry_update", target_id)
        if scope == STATION
        else ("site.update", f"site:{target_id}")
    )
    await audit.record(s, actor=actor, action=action, target=target, details=diff, now=now)


async def set_credentials(
    s: AsyncSession,
    station_id: str,
    username: str,
    password: str | None,
    *,
    key: bytes,
    actor: str,
    now: dt.datetime,
) -> None:
    """Store (or, with ``password`` None, forget) the station's upstream Basic credentials,
    the password sealed; the audit entry names the user only."""
    if not 1 <= len(username) <= MAX_USERNAME or ":" in username or not username.isprintable():
        raise BundleError(f"username: 1-{MAX_USERNAME} printable characters, no ':'")
    if password is not None and not (1 <= len(password) <= MAX_PASSWORD and password.isprintable()):
        raise BundleError(f"password: 1-{MAX_PASSWORD} printable characters")
    row = await _row(s, STATION, station_id, now)
    assert isinstance(row, StationUpstream)
    row.username = username if password is not None else None
    row.sealed_password = (
        sealing.seal(key, password.encode(), aad=_aad(station_id)) if password is not None else None
    )
    row.updated_at = now
    await audit.record(
        s,
        actor=actor,
        action=CREDENTIALS_ACTION,
        target=station_id,
        details={"username": username, "stored": password is not None},
        now=now,
    )


async def resolve(s: AsyncSession, station_id: str, key: bytes | None) -> StationSettings:
    """The station's settings, its site's where it has none; the stored credentials opened
    with ``key`` (None: not read)."""
    own = await s.get(StationUpstream, station_id)
    station = await s.get(Station, station_id)
    site = (
        await s.get(SiteUpstream, station.site_id)
        if station is not None and station.site_id
        else None
    )
    url = (own.url_template if own else None) or (site.url_template if site else None)
    policy = (own.firmware_policy if own else None) or (site.firmware_policy if site else None)
    credentials = None
    if key is not None and own is not None and own.sealed_password and own.username:
        try:
            password = sealing.unseal(key, own.sealed_password, aad=_aad(station_id))
            credentials = (own.username, password.decode())
        except (IntegrityError, ConfigError):
            LOG.error("%s: stored upstream credentials do not open with the key", station_id)
    return StationSettings(
        url_template=url,
        firmware_policy=FirmwarePolicy(policy) if policy else None,
        credentials=credentials,
    )
