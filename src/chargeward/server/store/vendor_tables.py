"""The tables of vendors' own signed firmware (ADR 0041): the manufacturer roots registered per
hardware model, and the releases whose image a vendor signed (their provenance marker).  Part
of :data:`chargeward.server.store.tables.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.storage.base import Base


class VendorRoot(Base):
    """A vendor's manufacturer root certificate, trusted for the firmware of one model."""

    __tablename__ = "vendor_roots"

    model: Mapped[str] = mapped_column(String(20), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of DER
    certificate_pem: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(300))
    not_after: Mapped[dt.datetime]
    added_by: Mapped[str] = mapped_column(String(100))
    added_at: Mapped[dt.datetime]


class VendorRelease(Base):
    """A release whose single image is a vendor's, signature and certificate as shipped:
    provenance ``vendor-supplied``.  Its root is the registered root that verified it."""

    __tablename__ = "vendor_releases"

    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    root_fingerprint: Mapped[str] = mapped_column(String(64))
    certificate_fingerprint: Mapped[str] = mapped_column(String(64))
