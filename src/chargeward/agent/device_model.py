"""The agent's OCPP 2.0.1 device model: what a CSMS reads and sets (B05, B06, B07, B08).

Only what the reference agent has is listed, with the value it runs on: its identity, its
EVSEs and connectors, how it talks to the CSMS (heartbeat, message timeout, websocket pings,
reconnect back-off), its security profile and certificates, and its firmware (a vendor
component, ``ChargewardFirmwareCtrlr``: booted slot, version, security version, rollback
floor).  Nothing is reported that the agent does not do (no metering, no smart charging, no
local authorisation list).

Settable variables are kept on flash (the state directory's settings) and take effect as
OCPP says: ``HeartbeatInterval`` at the next heartbeat, ``WebSocketPingInterval`` and the
``RetryBackOff*`` variables at the next connection.  ``BasicAuthPassword`` is write-only and
sealed with the charger's secrets before the answer goes out (A01).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chargeward.agent import certificates
from chargeward.agent.config import AgentConfig
from chargeward.ocpp.station import ITEMS_PER_MESSAGE

if TYPE_CHECKING:
    from chargeward.agent.agent import Agent

LOG = logging.getLogger("chargeward.agent")
VENDOR_FIRMWARE = "ChargewardFirmwareCtrlr"  # a vendor component: the agent's A/B firmware
VALUE_MAX = 2500  # GetVariableResultType.attributeValue, VariableAttributeType.value
REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
SUMMARY_VARIABLES = frozenset({"AvailabilityState", "Available", "FirmwareVersion"})

Reader = Callable[["Agent"], str]
Writer = Callable[["Agent", str], str]


@dataclass(frozen=True)
class Variable:
    """One variable of one component (an EVSE or connector when ``evse`` is set)."""

    component: str
    name: str
    data_type: str  # VariableCharacteristics.dataType
    read: Reader | None  # None: write-only
    write: Writer | None = None  # None: read-only
    evse: int | None = None
    connector: int | None = None
    instance: str | None = None  # the variable's instance
    unit: str | None = None

    @property
    def mutability(self) -> str:
        if self.read is None:
            return "WriteOnly"
        return "ReadOnly" if self.write is None else "ReadWrite"

    def component_key(self) -> tuple[str, int | None, int | None]:
        return (self.component, self.evse, self.connector)

    def component_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.component}
        if self.evse is not None:
            out["evse"] = {"id": self.evse}
            if self.connector is not None:
                out["evse"]["connector_id"] = self.connector
        return out

    def variable_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        return out

    def value(self, agent: Agent) -> str:
        assert self.read is not None
        return self.read(agent)[:VALUE_MAX]

    def report_data(self, agent: Agent) -> dict[str, Any]:
        """This variable as a NotifyReport ``reportData`` entry."""
        attribute: dict[str, Any] = {"type": "Actual", "mutability": self.mutability}
        if self.read is not None:
            attribute["value"] = self.value(agent)
        characteristics: dict[str, Any] = {
            "data_type": self.data_type,
            "supports_monitoring": False,
        }
        if self.unit is not None:
            characteristics["unit"] = self.unit
        return {
            "component": self.component_json(),
            "variable": self.variable_json(),
            "variable_attribute": [attribute],
            "variable_characteristics": characteristics,
        }


@dataclass(frozen=True)
class Setting:
    """A ReadWrite integer kept in the state directory's settings, within ``low..high``."""

    key: str
    low: int
    high: int
    default: Callable[[AgentConfig], float]  # when the CSMS never set it

    def get(self, agent: Agent) -> float:
        value = agent.state.settings().get(self.key)
        return float(value) if isinstance(value, int) else self.default(agent.config)

    def read(self, agent: Agent) -> str:
        return str(round(self.get(agent)))

    def write(self, agent: Agent, value: str) -> str:
        number = _integer(value, self.low, self.high)
        if number is None:
            return "Rejected"
        agent.state.set_setting(self.key, number)
        LOG.info("%s: %s set to %d by the CSMS", agent.identity.station_id, self.key, number)
        return "Accepted"


def _integer(value: str, low: int, high: int) -> int | None:
    """``value`` as a whole number within ``low..high``, or None (ASCII digits only)."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return None
    number = int(text)
    return number if low <= number <= high else None


PING_INTERVAL = Setting(  # 0: no websocket pings (OCPP 2.0.1 Part 4)
    "OCPPCommCtrlr/WebSocketPingInterval", 0, 86400, lambda c: c.ping_interval
)
BACKOFF_MINIMUM = Setting(
    "OCPPCommCtrlr/RetryBackOffWaitMinimum", 0, 3600, lambda c: c.reconnect_delay
)
BACKOFF_RANDOM = Setting(
    "OCPPCommCtrlr/RetryBackOffRandomRange",
    0,
    3600,
    lambda c: c.reconnect_delay if c.reconnect_random_range is None else c.reconnect_random_range,
)
BACKOFF_REPEAT = Setting(
    "OCPPCommCtrlr/RetryBackOffRepeatTimes", 0, 16, lambda c: c.reconnect_repeat_times
)


def _security_profile(agent: Agent) -> str:
    if not agent.tls:
        return "1"
    return "3" if agent.state.device_certificate_path.exists() else "2"


def _heartbeat(agent: Agent) -> str:
    return str(agent.heartbeat_interval)


def _set_heartbeat(agent: Agent, value: str) -> str:
    """OCPPCommCtrlr.HeartbeatInterval: used from the next heartbeat on, until the next
    BootNotification answer gives another (B01)."""
    number = _integer(value, 1, 86400)
    if number is None:
        return "Rejected"
    agent.heartbeat_interval = number
    return "Accepted"


def _connector_status(evse: int) -> Reader:
    return lambda agent: agent.connector_status.get(evse, "Unavailable")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _station_available(agent: Agent) -> str:
    return "Unavailable" if agent.quarantine is not None else "Available"


class DeviceModel:
    """The variables of one :class:`Agent`, read and written as OCPP asks."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def variables(self) -> Iterator[Variable]:
        """Every variable, in report order."""
        agent = self._agent
        yield from (
            Variable("ChargingStation", "Model", "string", lambda a: a.identity.model),
            Variable("ChargingStation", "VendorName", "string", lambda a: a.identity.vendor),
            Variable("ChargingStation", "AvailabilityState", "OptionList", _station_available),
            Variable("ChargingStation", "Available", "boolean", lambda a: "true"),
            Variable(
                "ChargingStation",
                "AllowNewSessionsPendingFirmwareUpdate",
                "boolean",
                lambda a: _flag(a.charging.allow_new_sessions_pending_update),
                lambda a, v: a.callbacks.set_allow_new_sessions(v),
            ),
        )
        for evse in sorted(agent.connector_status):
            status = _connector_status(evse)
            yield Variable("EVSE", "AvailabilityState", "OptionList", status, evse=evse)
            yield Variable("EVSE", "Available", "boolean", lambda a: "true", evse=evse)
            yield Variable(
                "Connector", "AvailabilityState", "OptionList", status, evse=evse, connector=1
            )
            yield Variable(
                "Connector", "Available", "boolean", lambda a: "true", evse=evse, connector=1
            )
        comm = "OCPPCommCtrlr"
        yield Variable(comm, "HeartbeatInterval", "integer", _heartbeat, _set_heartbeat, unit="s")
        for name, setting, unit in (
            ("WebSocketPingInterval", PING_INTERVAL, "s"),
            ("RetryBackOffWaitMinimum", BACKOFF_MINIMUM, "s"),
            ("RetryBackOffRandomRange", BACKOFF_RANDOM, "s"),
            ("RetryBackOffRepeatTimes", BACKOFF_REPEAT, None),
        ):
            yield Variable(comm, name, "integer", setting.read, setting.write, unit=unit)
        yield Variable(
            comm,
            "MessageTimeout",
            "integer",
            lambda a: str(round(a.config.response_timeout)),
            instance="Default",
            unit="s",
        )
        yield Variable(comm, "FileTransferProtocols", "MemberList", lambda a: "HTTP,HTTPS")
        yield from (
            Variable("SecurityCtrlr", "Identity", "string", lambda a: a.identity.station_id),
            Variable("SecurityCtrlr", "SecurityProfile", "integer", _security_profile),
            Variable(
                "SecurityCtrlr",
                "BasicAuthPassword",
                "string",
                None,
                lambda a, v: a.callbacks.set_password(v),
            ),
            Variable(
                "SecurityCtrlr",
                "CertificateEntries",
                "integer",
                lambda a: str(len(certificates.installed_certificates(a.state, None))),
            ),
        )
        for instance in ("GetReport", "GetVariables", "SetVariables"):
            yield Variable(
                "DeviceDataCtrlr",
                "ItemsPerMessage",
                "integer",
                lambda a: str(ITEMS_PER_MESSAGE),
                instance=instance,
            )
        yield Variable(
            "DeviceDataCtrlr",
            "BytesPerMessage",
            "integer",
            lambda a: str(a.config.limits.frame_bytes),
            instance="GetReport",
        )
        booted = agent.booted
        if booted is not None:
            fw = VENDOR_FIRMWARE
            yield from (
                Variable(fw, "FirmwareVersion", "string", lambda a: booted.header.version),
                Variable(fw, "BootedSlot", "string", lambda a: booted.slot),
                Variable(fw, "TrialBoot", "boolean", lambda a: _flag(booted.trial)),
                Variable(
                    fw,
                    "SecurityVersion",
                    "integer",
                    lambda a: str(booted.header.security_version),
                ),
                Variable(fw, "RollbackFloor", "integer", lambda a: str(a.state.rollback_floor())),
            )

    # -- B06 GetVariables, B05 SetVariables ------------------------------------------------

    def _lookup(
        self, component: dict[str, Any], variable: dict[str, Any]
    ) -> tuple[str, Variable | None]:
        """The variable asked for, or the status saying why there is none."""
        evse = component.get("evse") or {}
        key = (component.get("name"), evse.get("id"), evse.get("connector_id"))
        if component.get("instance") is not None:
            return "UnknownComponent", None  # no component of the agent has instances
        found_component = False
        for v in self.variables():
            if v.component_key() != key:
                continue
            found_component = True
            if v.name == variable.get("name") and v.instance == variable.get("instance"):
                return "Accepted", v
        return ("UnknownVariable" if found_component else "UnknownComponent"), None

    def get(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str
    ) -> tuple[str, str | None]:
        """One GetVariables entry: (attributeStatus, attributeValue)."""
        status, found = self._lookup(component, variable)
        if found is None:
            return status, None
        if attribute_type != "Actual":
            return "NotSupportedAttributeType", None
        if found.read is None:  # write-only, e.g. BasicAuthPassword (B06, A01)
            return "Rejected", None
        return "Accepted", found.value(self._agent)

    def set(
        self, component: dict[str, Any], variable: dict[str, Any], attribute_type: str, value: str
    ) -> str:
        """One SetVariables entry: its attributeStatus."""
        status, found = self._lookup(component, variable)
        if found is None:
            return status
        if attribute_type != "Actual":
            return "NotSupportedAttributeType"
        if found.write is None:  # read-only (B05: Rejected)
            return "Rejected"
        return found.write(self._agent, value)

    # -- B07 GetBaseReport, B08 GetReport ------------------------------------------------------

    def base_report(self, report_base: str) -> list[dict[str, Any]]:
        """The reportData of a GetBaseReport (empty for a base the agent does not know)."""
        if report_base == "ConfigurationInventory":
            chosen = [v for v in self.variables() if v.write is not None]
        elif report_base == "FullInventory":
            chosen = list(self.variables())
        elif report_base == "SummaryInventory":
            chosen = [v for v in self.variables() if v.name in SUMMARY_VARIABLES]
        else:
            chosen = []
        return [v.report_data(self._agent) for v in chosen]

    def custom_report(
        self, component_variable: list[dict[str, Any]] | None, criteria: list[str] | None
    ) -> list[dict[str, Any]]:
        """The reportData of a GetReport: the variables named (a component alone: all of its
        variables) whose component meets one of the criteria.  Every component of the agent
        is Active, Available and Enabled; none reports a Problem."""
        if criteria and not set(criteria) & {"Active", "Available", "Enabled"}:
            return []
        chosen = []
        for v in self.variables():
            if component_variable and not any(_selects(cv, v) for cv in component_variable):
                continue
            chosen.append(v.report_data(self._agent))
        return chosen


def _selects(wanted: dict[str, Any], v: Variable) -> bool:
    component = wanted.get("component") or {}
    if component.get("name") != v.component or component.get("instance") is not None:
        return False
    evse = component.get("evse")
    if evse is not None and (
        evse.get("id") != v.evse
        or (evse.get("connector_id") is not None and evse.get("connector_id") != v.connector)
    ):
        return False
    variable = wanted.get("variable")
    if variable is None:
        return True
    return bool(variable.get("name") == v.name and variable.get("instance") == v.instance)


def report_messages(
    data: list[dict[str, Any]], per_message: int = ITEMS_PER_MESSAGE
) -> list[tuple[list[dict[str, Any]], bool]]:
    """``data`` cut into NotifyReport parts: (reportData, tbc) each, tbc False on the last."""
    parts = [data[i : i + per_message] for i in range(0, len(data), per_message)] or [[]]
    return [(part, i < len(parts) - 1) for i, part in enumerate(parts)]
