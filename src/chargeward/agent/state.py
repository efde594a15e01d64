"""The charger's flash, as a state directory.

::

    identity.json               station id, model, vendor, serial number, customer (optional)
    secure/roots.pem            ManufacturerRootCertificate trust anchors
    otp/device-unique-key       device-unique key ("fuses": see :mod:`chargeward.agent.credentials`)
    secure/credentials.enc      BasicAuthPassword and other secrets, sealed (AES-256-GCM)
    secure/factory/credentials.enc  the factory credentials a factory reset restores, sealed
    secure/device.pem           device certificate (CN = serial number), from the factory CA
    secure/csms-roots.pem       CSMS root certificate(s), when provisioned (or installed, M05)
    secure/rollback.json        rollback floor (lowest acceptable security version)
    secure/time_floor.json      time floor: the clock may never be earlier than this (UTC)
    secure/tuf/bootstrap-root.json  TUF root shipped at manufacture (its presence enforces TUF)
    secure/tuf/metadata/        python-tuf's verified metadata (root_history/, timestamp.json, ...)
    boot.json                   boot control: active slot, trial flag, attempts left
    slots/{a,b}/image.cwfw      firmware image (the release's primary), with slot.json
                                (signature, certificate, header, the other components)
    slots/{a,b}/components/<component>.cwfw  the release's other images (a slot group)
    install.json                install state (rauc order: "pending" before the slot is written)
    downloads/<key>.part        partial downloads, resumed after a drop or a reboot
    status.json                 last firmware status sent (for TriggerMessage)
    pending_events.json         security events the bootloader found, sent at the next connection
    settings.json               device model variables set by the CSMS (SetVariables)
    display.json                notice shown to the owner on the charger (tamper quarantine)
    update_check.json           targets already reported as SecurityUpdateAvailable

``secure/`` (rollback floor, time floor, trust anchors, TUF metadata) is shared by both slots:
installing into the other slot never resets it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root

from chargeward.agent.credentials import CredentialStore
from chargeward.agent.storage import atomic_write, read_json, remove, write_json
from chargeward.crypto import load_certificates
from chargeward.crypto.station_passwords import check_password_policy
from chargeward.errors import BundleError, ConfigError
from chargeward.model.firmware import check_component
from chargeward.model.targets import check_customer

SLOTS = ("a", "b")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Identity:
    station_id: str
    model: str
    vendor: str
    serial_number: str
    customer: str | None = None

    def __post_init__(self) -> None:
        try:
            check_customer(self.customer)
        except BundleError as e:
            raise ConfigError(str(e)) from e


@dataclass(frozen=True)
class BootControl:
    active: str
    trial: bool = False
    attempts_left: int = 0
    previous: str | None = None


@dataclass(frozen=True)
class ComponentInfo:
    """One more image of the slot's release: same certificate, version and security version."""

    component: str
    sha256: str
    length: int
    signature: str


@dataclass(frozen=True)
class SlotInfo:
    """What a slot holds: the release's primary image and, for a multi-image release, the
    other components (``components``, each a file under ``components/``)."""

    sha256: str
    length: int
    signature: str
    signing_certificate: str
    component: str
    version: str
    security_version: int
    components: tuple[ComponentInfo, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlotInfo:
        others = tuple(ComponentInfo(**c) for c in data.get("components", ()))
        return cls(**{**data, "components": others})

    def component_sha256(self, component: str) -> str | None:
        """The SHA-256 of ``component``'s image in this slot, if it holds one."""
        if component == self.component:
            return self.sha256
        return next((c.sha256 for c in self.components if c.component == component), None)


@dataclass(frozen=True)
class InstallState:
    """An install in progress, or the outcome of the last one."""

    request_id: int
    phase: str  # pending | written | rebooting | ok | failed
    target_slot: str
    version: str
    security_version: int
    detail: str = ""


def check_tuf_root(data: bytes) -> Root:
    """Refuse anything but self-signed TUF root metadata before it becomes a trust anchor."""
    try:
        md = Metadata[Root].from_bytes(data)
        if not isinstance(md.signed, Root):
            raise RepositoryError(f"it holds {md.signed.type} metadata")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except (RepositoryError, ValueError) as e:
        cause = f" ({e.__cause__!r})" if e.__cause__ is not None else ""
        raise ConfigError(f"not usable as TUF root metadata: {e}{cause}") from e
    return md.signed


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths
    @property
    def secure(self) -> Path:
        return self.root / "secure"

    def slot_dir(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise ConfigError(f"unknown slot {slot!r}")
        return self.root / "slots" / slot

    def slot_image(self, slot: str) -> Path:
        return self.slot_dir(slot) / "image.cwfw"

    def component_image(self, slot: str, component: str) -> Path:
        """Where a non-primary component of the slot's release lives."""
        return self.slot_dir(slot) / "components" / f"{check_component(component)}.cwfw"

    def image_of(self, slot: str, info: SlotInfo, component: str) -> Path:
        """The file holding ``component``'s image in ``slot`` (described by ``info``)."""
        if component == info.component:
            return self.slot_image(slot)
        return self.component_image(slot, component)

    @property
    def downloads(self) -> Path:
        d = self.root / "downloads"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- identity and secrets
    def identity(self) -> Identity:
        data = read_json(self.root / "identity.json")
        if data is None:
            raise ConfigError(
                f"{self.root} is not a provisioned charger state directory "
                "(run 'chargeward agent init')"
            )
        return Identity(**data)

    def set_identity(self, ident: Identity) -> None:
        write_json(self.root / "identity.json", asdict(ident))

    def trust_anchors(self) -> list[x509.Certificate]:
        path = self.secure / "roots.pem"
        return load_certificates(path.read_bytes()) if path.exists() else []

    def set_trust_anchors(self, pem: bytes) -> None:
        load_certificates(pem)  # refuse garbage before it becomes a trust anchor
        atomic_write(self.secure / "roots.pem", pem)

    def credential_store(self) -> CredentialStore:
        """The sealed secrets, bound to this charger's serial number."""
        return CredentialStore(self.root, self.identity().serial_number)

    def password(self) -> str:
        return self.credential_store().load().basic_auth_password

    def set_password(self, password: str) -> None:
        """Change the current BasicAuthPassword (the factory copy keeps the original)."""
        check_password_policy(password)
        store = self.credential_store()
        store.save(replace(store.load(), basic_auth_password=password))

    @property
    def device_certificate_path(self) -> Path:
        return self.secure / "device.pem"

    @property
    def csms_roots_path(self) -> Path:
        return self.secure / "csms-roots.pem"

    def csms_roots(self) -> list[x509.Certificate]:
        """The CSMSRootCertificates the TLS client trusts (empty when never provisioned)."""
        path = self.csms_roots_path
        return load_certificates(path.read_bytes()) if path.exists() else []

    def csms_roots_pem(self) -> bytes | None:
        """``csms-roots.pem`` as it is, or None: also trusted for https downloads, log uploads
        and TUF fetches, beside the system CAs (ADR 0025)."""
        path = self.csms_roots_path
        try:
            return path.read_bytes() if path.exists() else None
        except OSError:
            return None

    def set_csms_roots(self, pem: bytes) -> None:
        load_certificates(pem)  # refuse garbage before the TLS client trusts it
        atomic_write(self.csms_roots_path, pem)

    def rollback_floor(self) -> int:
        return int(read_json(self.secure / "rollback.json", {"floor": 0})["floor"])

    def raise_rollback_floor(self, value: int) -> int:
        floor = max(self.rollback_floor(), value)  # the floor never goes down
        write_json(self.secure / "rollback.json", {"floor": floor})
        return floor

    def time_floor(self) -> dt.datetime | None:
        """The earliest time the clock may show (the last verified repository time), if any."""
        data = read_json(self.secure / "time_floor.json")
        if not data:
            return None
        return dt.datetime.strptime(data["floor"], TIME_FORMAT).replace(tzinfo=dt.UTC)

    def raise_time_floor(self, value: dt.datetime) -> dt.datetime:
        """Raise the time floor to ``value`` (whole seconds, UTC); it never goes down."""
        value = value.astimezone(dt.UTC).replace(microsecond=0)
        current = self.time_floor()
        if current is not None and current >= value:
            return current
        write_json(self.secure / "time_floor.json", {"floor": value.strftime(TIME_FORMAT)})
        return value

    # -- TUF repository (shared by both slots)
    @property
    def tuf_metadata_dir(self) -> Path:
        """python-tuf's metadata cache; the ``Updater`` keeps root history and roles here."""
        d = self.secure / "tuf" / "metadata"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def tuf_bootstrap_root(self) -> bytes | None:
        """The TUF root shipped at manufacture, or None when this charger does not use TUF."""
        path = self.secure / "tuf" / "bootstrap-root.json"
        return path.read_bytes() if path.exists() else None

    def set_tuf_bootstrap_root(self, data: bytes) -> None:
        """Install the repository's root.json (see :func:`check_tuf_root`)."""
        check_tuf_root(data)
        atomic_write(self.secure / "tuf" / "bootstrap-root.json", data)

    def reported_updates(self) -> set[str]:
        """Target paths already reported to the CSMS as SecurityUpdateAvailable."""
        data = read_json(self.root / "update_check.json", {}) or {}
        return set(data.get("reported", []))

    def add_reported_update(self, path: str) -> None:
        reported = self.reported_updates() | {path}
        write_json(self.root / "update_check.json", {"reported": sorted(reported)})

    # -- boot control and slots
    def boot_control(self) -> BootControl:
        data = read_json(self.root / "boot.json")
        if data is None:
            raise ConfigError("no boot control: the charger was never provisioned")
        return BootControl(**data)

    def set_boot_control(self, bc: BootControl) -> None:
        write_json(self.root / "boot.json", asdict(bc))

    def slot_info(self, slot: str) -> SlotInfo | None:
        data = read_json(self.slot_dir(slot) / "slot.json")
        return SlotInfo.from_dict(data) if data else None

    def set_slot_info(self, slot: str, info: SlotInfo | None) -> None:
        path = self.slot_dir(slot) / "slot.json"
        if info is None:
            remove(path)
        else:
            write_json(path, asdict(info))

    # -- security events found while offline (the bootloader has no network)
    def pending_events(self) -> list[dict[str, str]]:
        return list(read_json(self.root / "pending_events.json", []) or [])

    def add_pending_event(self, type: str, tech_info: str) -> None:
        event = {"type": type, "tech_info": tech_info}
        events = self.pending_events()
        if event not in events:  # the same finding after a power loss is queued once
            write_json(self.root / "pending_events.json", [*events, event])

    def drop_pending_event(self, event: dict[str, str]) -> None:
        events = self.pending_events()
        if event in events:
            events.remove(event)
            write_json(self.root / "pending_events.json", events)

    # -- install and status
    def install_state(self) -> InstallState | None:
        data = read_json(self.root / "install.json")
        return InstallState(**data) if data else None

    def set_install_state(self, st: InstallState) -> None:
        write_json(self.root / "install.json", asdict(st))

    def last_status(self) -> dict[str, Any]:
        return dict(read_json(self.root / "status.json", {}) or {})

    def set_last_status(self, status: str, request_id: int | None) -> None:
        write_json(self.root / "status.json", {"status": status, "request_id": request_id})

    # -- what the charger's own display shows its owner (tamper quarantine)
    def owner_notice(self) -> str | None:
        data = read_json(self.root / "display.json")
        return str(data["notice"]) if data else None

    def set_owner_notice(self, notice: str | None) -> None:
        if notice is None:
            remove(self.root / "display.json")
        else:
            write_json(self.root / "display.json", {"notice": notice})

    # -- device model variables the CSMS set (SetVariables); factory reset clears them
    def settings(self) -> dict[str, Any]:
        return dict(read_json(self.root / "settings.json", {}) or {})

    def set_setting(self, name: str, value: Any) -> None:
        write_json(self.root / "settings.json", {**self.settings(), name: value})
