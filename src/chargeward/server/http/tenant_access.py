"""Who may read a customer's tenant role and images in the TUF repository (ADR 0026).

``/tuf/metadata/N.tenant-<id>.json`` and ``/tuf/targets/tenants/<id>/...`` list and serve the
releases locked to one customer.  They are answered only to

- a station of that customer (registry ``customer``), with HTTP Basic: its OCPP station id
  and ``BasicAuthPassword``, as security profiles 1 and 2 use on the OCPP listener (profile 3
  stations may send it too); a verified password is remembered for a while
  (:class:`~chargeward.server.auth.passwords.RecentLogins`, so a refresh does not cost an argon2
  check per file) and failed ones count towards a lockout of their own
  (:class:`~chargeward.server.auth.throttle.StationThrottle`);
- an operator bearer token holding ``releases:read`` whose account is the manufacturer's, or
  of that customer (:func:`chargeward.server.auth.tenancy.release_visible`).

Everyone else (no credentials, wrong ones, a locked caller, another customer) gets the 404 an
unknown file gets: the answer never confirms that the role or the image exists.

    await may_read_tenant(request, state, tenant_id("fleet-a"))
    # -> False
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging

from fastapi import Request
from sqlalchemy import select

from chargeward.model.targets import tenant_id
from chargeward.server.auth import passwords
from chargeward.server.auth.accounts import Refusal
from chargeward.server.auth.sessions import authenticate
from chargeward.server.auth.throttle import StationThrottle
from chargeward.server.state import ServerState
from chargeward.server.stations import station_security
from chargeward.server.store.tables import Station

LOG = logging.getLogger("chargeward.server.tuf")
PERMISSION = "releases:read"
_RECENT = "chargeward_tuf_recent_logins"
_THROTTLE = "chargeward_tuf_throttle"


def _basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user and len(user) <= 48 else None


def _app_state(request: Request, name: str, make: type) -> object:
    found = getattr(request.app.state, name, None)
    if found is None:
        found = make()
        setattr(request.app.state, name, found)
    return found


async def station_customer(request: Request, state: ServerState, value: str) -> str | None:
    """The registry customer of the station whose Basic credentials are ``value`` (None when
    the credentials are wrong, the caller is locked out, or the station has no customer)."""
    creds = _basic(value)
    if creds is None:
        return None
    station_id, password = creds
    address = request.client.host if request.client else "unknown"
    throttle = _app_state(request, _THROTTLE, StationThrottle)
    recent = _app_state(request, _RECENT, passwords.RecentLogins)
    assert isinstance(throttle, StationThrottle)
    assert isinstance(recent, passwords.RecentLogins)
    if throttle.wait(station_id, address) is not None:
        return None
    async with state.db.snapshot() as s:
        row = (await s.execute(select(Station.customer).where(Station.id == station_id))).first()
        auth = await station_security.station_auth(s, station_id) if row is not None else None
    ok = await station_security.check_password(state.db, station_id, password, auth, recent)
    if not ok or row is None:
        throttle.failed(station_id, address)
        return None
    throttle.succeeded(station_id, address)
    customer = row[0]
    return customer if isinstance(customer, str) else None


async def may_read_tenant(request: Request, state: ServerState, tid: str) -> bool:
    """Whether the caller may read tenant ``tid``'s role and images (see the module)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if not value:
        return False
    if scheme.lower() == "basic":
        customer = await station_customer(request, state, value)
        return customer is not None and hmac.compare_digest(tenant_id(customer), tid)
    if scheme.lower() != "bearer":
        return False
    try:
        async with state.db.session() as s:
            principal = await authenticate(s, value, now=state.clock())
    except Refusal:
        return False
    if not principal.can(PERMISSION):
        return False
    return principal.customer is None or hmac.compare_digest(tenant_id(principal.customer), tid)
