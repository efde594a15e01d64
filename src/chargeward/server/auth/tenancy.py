"""Customer accounts: a charge point operator's staff see and act on their own stations only.

A user created with a ``customer`` (:func:`chargeward.server.auth.accounts.create_user`) is an
operator or auditor *of that customer*.  After the route's permission, :func:`check` (run by
:func:`chargeward.server.http.authz.authorize` for every request of such an account) applies
``CUSTOMER_ROUTES``:

- a route missing from the table is refused: 403 ``an account of customer fleet-a cannot use
  this route`` (releases, approvals, users, the fleet-wide audit log and metrics are the
  manufacturer's);
- every path parameter naming a station, campaign, release, site or firmware update must name
  one of the customer's: otherwise 404, worded as for one that does not exist, so another
  customer's station ids cannot be probed;
- ``FILTERED`` routes narrow what they list to the customer (:func:`customer_of`), and a
  campaign created by such an account targets the customer's stations only
  (:func:`scope_campaign`).

Routes open to any authenticated caller (who am I, log out, one's own tokens) are allowed.
A customer-locked release (``customer`` in its signed manifest) belongs to that customer; a
release for every customer is visible to all of them.  A campaign belongs to a customer when
its target names exactly that customer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from fastapi import Request
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeward.campaign.spec import CampaignSpec
from chargeward.errors import NotFound
from chargeward.server.auth.accounts import Refusal
from chargeward.server.auth.roles import Principal
from chargeward.server.common import inputs
from chargeward.server.store.tables import Campaign, FirmwareUpdate, Release, Site, Station

PRINCIPAL_KEY: Final = "chargeward.principal"  # request.scope: the authorized caller
CHECKED: Final = "checked"  # the path's parameters are checked, the handler is unchanged
FILTERED: Final = "filtered"  # the handler narrows its answer with customer_of()

# (method, path template) -> CHECKED or FILTERED; anything else is refused to a customer.
CUSTOMER_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/stations"): FILTERED,
    ("GET", "/api/v1/stations/{station_id}"): CHECKED,
    ("GET", "/api/v1/stations/{station_id}/reports"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/reports/device-model"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/firmware-updates"): CHECKED,
    ("GET", "/api/v1/firmware-updates/{transaction_id}"): CHECKED,
    ("GET", "/api/v1/stations/{station_id}/certificates"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/certificates"): CHECKED,
    ("DELETE", "/api/v1/stations/{station_id}/certificates"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/logs"): CHECKED,
    ("GET", "/api/v1/stations/{station_id}/logs"): CHECKED,
    ("GET", "/api/v1/stations/{station_id}/logs/{request_id}"): CHECKED,
    ("GET", "/api/v1/stations/{station_id}/security"): CHECKED,
    ("PUT", "/api/v1/stations/{station_id}/security-profile"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/password-rotation"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/certificate-renewal"): CHECKED,
    ("PUT", "/api/v1/stations/{station_id}/certificate"): CHECKED,
    ("POST", "/api/v1/stations/{station_id}/certificate-revocations"): CHECKED,
    ("GET", "/api/v1/releases"): FILTERED,
    ("GET", "/api/v1/releases/{release_id}"): CHECKED,
    ("POST", "/api/v1/campaigns"): FILTERED,
    ("GET", "/api/v1/campaigns"): FILTERED,
    ("GET", "/api/v1/campaign-releases"): FILTERED,
    ("GET", "/api/v1/campaigns/{ref}"): CHECKED,
    ("GET", "/api/v1/campaigns/{ref}/stations"): CHECKED,
    ("GET", "/api/v1/campaigns/{ref}/downloads"): CHECKED,
    ("GET", "/api/v1/campaigns/{ref}/stations/{station_id}"): CHECKED,
    ("POST", "/api/v1/campaigns/{ref}/pause"): CHECKED,
    ("POST", "/api/v1/campaigns/{ref}/resume"): CHECKED,
    ("POST", "/api/v1/campaigns/{ref}/abort"): CHECKED,
    ("POST", "/api/v1/campaigns/{ref}/retry"): CHECKED,
    ("POST", "/api/v1/campaigns/{ref}/rollback"): CHECKED,
    ("GET", "/api/v1/sites"): FILTERED,
    ("GET", "/api/v1/sites/{site_id}"): CHECKED,
    ("GET", "/api/v1/models"): CHECKED,  # the manufacturer's model catalogue
    ("GET", "/api/v1/models/{model_id}"): CHECKED,
    ("GET", "/api/v1/fleet/support"): FILTERED,
    ("GET", "/api/v1/alerts"): FILTERED,
    ("GET", "/api/v1/security-events"): FILTERED,
}


def customer_of(request: Request) -> str | None:
    """The caller's customer; None for the manufacturer's staff (and public routes)."""
    principal = request.scope.get(PRINCIPAL_KEY)
    return principal.customer if isinstance(principal, Principal) else None


def stations_of(customer: str) -> Select[Any]:
    """The ids of a customer's stations, for ``column.in_(...)``."""
    return select(Station.id).where(Station.customer == customer)


def campaign_customer(spec: Mapping[str, object]) -> str | None:
    """The customer a stored campaign belongs to: the one its target names, if just one."""
    target = spec.get("target")
    customers = target.get("customers") if isinstance(target, Mapping) else None
    if isinstance(customers, list) and len(customers) == 1 and isinstance(customers[0], str):
        return customers[0]
    return None


def release_visible(release_customer: str | None, customer: str | None) -> bool:
    return customer is None or release_customer in (None, customer)


async def check_release(s: AsyncSession, release_id: str, customer: str | None) -> None:
    """A release named in a request body: another customer's is 404, as if it did not exist."""
    if customer is None:
        return
    found, owner = await _owner(s, "release_id", release_id)
    if found and not release_visible(owner, customer):
        raise NotFound(f"no release {release_id!r}")


def scope_campaign(spec: CampaignSpec, customer: str | None) -> CampaignSpec:
    """A campaign created by a customer account: its target is that customer's stations."""
    if customer is None:
        return spec
    named = spec.selector.customers
    if named and named != (customer,):
        others = ", ".join(c for c in named if c != customer)
        raise Refusal(
            403,
            "forbidden",
            f"an account of customer {customer} cannot target stations of {others}",
            field="target.customers",
        )
    return dataclasses.replace(
        spec, selector=dataclasses.replace(spec.selector, customers=(customer,))
    )


async def _owner(s: AsyncSession, name: str, value: str) -> tuple[bool, str | None]:
    """(found, customer) of the object a path parameter names."""
    if name == "station_id":
        row = (await s.execute(select(Station.customer).where(Station.id == value))).first()
    elif name == "transaction_id":
        row = (
            await s.execute(
                select(Station.customer)
                .join(FirmwareUpdate, FirmwareUpdate.station_id == Station.id)
                .where(FirmwareUpdate.transaction_id == value)
            )
        ).first()
    elif name == "site_id":
        row = (await s.execute(select(Site.customer).where(Site.id == value))).first()
    elif name == "release_id":
        found = (await s.execute(select(Release.customer).where(Release.id == value))).first()
        # a release for every customer is the caller's as much as anyone's
        return (found is not None, None if found is None else found[0])
    elif name == "ref":  # an id or a name, as campaigns.get_campaign takes it
        spec = None
        if (number := inputs.row_id(value)) is not None:
            spec = (await s.scalars(select(Campaign.spec).where(Campaign.id == number))).first()
        if spec is None:
            spec = (await s.scalars(select(Campaign.spec).where(Campaign.name == value))).first()
        return (spec is not None, None if spec is None else campaign_customer(spec))
    else:
        return (True, None)
    return (row is not None, None if row is None else row[0])


_WHAT = {
    "station_id": "station",
    "transaction_id": "firmware update",
    "site_id": "site",
    "release_id": "release",
    "ref": "campaign",
}


async def check(
    s: AsyncSession, principal: Principal, method: str, path: str, params: Mapping[str, str]
) -> None:
    """Refuse a customer account a route it may not use, or an object of another customer."""
    customer = principal.customer
    if customer is None:
        return
    if (method, path) not in CUSTOMER_ROUTES:
        raise Refusal(403, "forbidden", f"an account of customer {customer} cannot use this route")
    for name, value in params.items():
        if name not in _WHAT:
            continue
        found, owner = await _owner(s, name, value)
        mine = release_visible(owner, customer) if name == "release_id" else owner == customer
        if not found or not mine:
            raise NotFound(f"no {_WHAT[name]} {value!r}")
