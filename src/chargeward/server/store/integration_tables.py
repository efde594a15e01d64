"""The tables of the integration API (ADR 0042): which stations an external CSMS delivers to,
and the events it already reported (retried webhooks change nothing twice).  Part of
:data:`chargeward.server.store.tables.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.storage.base import Base


class StationDelivery(Base):
    """How a station gets its UpdateFirmware: ``ocpp`` (no row: Chargeward is its CSMS) or
    ``external`` (the operator's own CSMS sends what ``/api/v1/integration`` says)."""

    __tablename__ = "station_delivery"

    station_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    delivery: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime]


class IntegrationEvent(Base):
    """One event an external CSMS reported for a station, by its ``messageId``: a retry of
    the same message is answered from here and recorded once."""

    __tablename__ = "integration_events"

    station_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[dt.datetime]
