"""The tables of several server nodes on one PostgreSQL database (:mod:`chargeward.server.
cluster`): nodes and their heartbeats, the leader's lease, which node holds which station, and
commands relayed between nodes.  Times here are the database's.  Part of
:data:`chargeward.server.store.tables.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chargeward.storage.base import Base


class ClusterNode(Base):
    """One running server process; stale heartbeat = gone, with its stations."""

    __tablename__ = "cluster_nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    api_url: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[dt.datetime]
    heartbeat_at: Mapped[dt.datetime]


class ClusterLeader(Base):
    """One row (``id`` 1): the leader's lease.  ``epoch`` grows with every new leader and
    fences the old one; ``backend_pid`` is its lease connection (gone: the lease is free)."""

    __tablename__ = "cluster_leader"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    node_id: Mapped[str | None] = mapped_column(String(36))
    epoch: Mapped[int] = mapped_column(BigInteger)
    lease_until: Mapped[dt.datetime]
    backend_pid: Mapped[int | None]


class StationPresence(Base):
    """Which node holds a station's websocket."""

    __tablename__ = "station_presence"

    station_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(36), index=True)
    connected_at: Mapped[dt.datetime]


class StationCommand(Base):
    """A call to a station connected to another node: pending -> running -> done | expired."""

    __tablename__ = "station_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(String(36))  # the node holding the station
    station_id: Mapped[str] = mapped_column(String(48))
    method: Mapped[str] = mapped_column(String(60))
    args: Mapped[dict[str, Any]] = mapped_column()
    state: Mapped[str] = mapped_column(String(10), default="pending")
    result: Mapped[dict[str, Any] | None]  # {"value": ...} or {"error": kind, "message": ...}
    created_at: Mapped[dt.datetime]
    deadline_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]


Index("ix_station_commands_claim", StationCommand.node_id, StationCommand.state)
