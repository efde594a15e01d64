"""How long each TUF role's metadata lives, when it is renewed, and when targets metadata may
be signed or published (:class:`ExpiryPolicy`); UTC times as the metadata writes them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata lives, and when it is renewed or warned about."""

    root: dt.timedelta = dt.timedelta(days=365)
    targets: dt.timedelta = dt.timedelta(days=90)
    snapshot: dt.timedelta = dt.timedelta(days=7)
    timestamp: dt.timedelta = dt.timedelta(days=1)
    # Online roles are re-signed when less than this is left.
    snapshot_renew: dt.timedelta = dt.timedelta(days=3)
    timestamp_renew: dt.timedelta = dt.timedelta(hours=12)
    # Offline roles (root, targets): warn when less than this is left.
    offline_warning: dt.timedelta = dt.timedelta(days=30)
    # Targets metadata is published only with more than this left (default: one timestamp
    # lifetime): chargers refuse expired metadata, and a rollout needs time to fetch it.
    publish_margin: dt.timedelta = dt.timedelta(days=1)
    # An open proposal fetched with less than this left is made again (approved again).
    proposal_renew: dt.timedelta = dt.timedelta(days=7)
    # How far the clocks of approvers and server may differ.
    clock_skew: dt.timedelta = dt.timedelta(minutes=10)

    def check_targets_expiry(self, expires: dt.datetime, now: dt.datetime) -> str | None:
        """Why targets metadata expiring at ``expires`` must not be signed or published now
        (None if it may): expired, expiring within :attr:`publish_margin`, or living longer
        than the policy's :attr:`targets` lifetime (plus :attr:`clock_skew`)."""
        left = expires - now
        if left <= dt.timedelta(0):
            return f"it expired at {utc_iso(expires)}: every charger would refuse it"
        if left <= self.publish_margin:
            return (
                f"it expires at {utc_iso(expires)}, within the {_span(self.publish_margin)} "
                "publishing margin: chargers would soon refuse it"
            )
        if left > self.targets + self.clock_skew:
            return (
                f"it expires at {utc_iso(expires)}, beyond the {_span(self.targets)} targets "
                "lifetime of the policy"
            )
        return None


def _span(delta: dt.timedelta) -> str:
    if delta % dt.timedelta(days=1) == dt.timedelta(0):
        return f"{delta.days}-day"
    return f"{delta.total_seconds() / 3600:g}-hour"


def utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_after(now: dt.datetime, lifetime: dt.timedelta) -> dt.datetime:
    return (now + lifetime).astimezone(dt.UTC).replace(microsecond=0)
