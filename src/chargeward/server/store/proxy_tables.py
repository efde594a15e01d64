"""Proxy mode's settings per station and per site (ADR 0040): the upstream CSMS's URL template
and the policy for its firmware commands (a station's override a site's, a site's the server's
``--upstream`` defaults), and a station's upstream credentials, the password sealed with
AES-256-GCM (:mod:`chargeward.server.proxy.settings`).  A row goes with its station or site.
Part of :data:`chargeward.server.store.tables.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.storage.base import Base


class StationUpstream(Base):
    """A station's proxy settings; NULL: the site's (or the server's)."""

    __tablename__ = "station_upstream"

    station_id: Mapped[str] = mapped_column(
        String(48), ForeignKey("stations.id", ondelete="CASCADE"), primary_key=True
    )
    url_template: Mapped[str | None] = mapped_column(String(512))
    firmware_policy: Mapped[str | None] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(64))
    sealed_password: Mapped[bytes | None] = mapped_column(LargeBinary)  # never leaves the server
    updated_at: Mapped[dt.datetime]


class SiteUpstream(Base):
    """A site's proxy settings for its stations; NULL: the server's."""

    __tablename__ = "site_upstream"

    site_id: Mapped[str] = mapped_column(
        String(48), ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    url_template: Mapped[str | None] = mapped_column(String(512))
    firmware_policy: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime]
