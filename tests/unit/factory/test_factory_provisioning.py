"""Factory provisioning: unique credentials per charger, sealed at rest, kept by a factory reset.

UK Smart Charge Points Regulations 2021 Sch.1 para 2; ETSI EN 303 645 provisions 5.1-1, 5.1-2.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chargeward.agent.credentials import Credentials, CredentialStore
from chargeward.agent.provision import TrustAnchors, factory_reset, provision
from chargeward.agent.state import Identity, StateDir
from chargeward.crypto import certificate_pem, create_root_ca, generate_key, load_certificate
from chargeward.crypto.sealing import (
    DeviceKeyPair,
    derive_device_key,
    device_public_key,
    seal,
    unseal,
)
from chargeward.crypto.station_passwords import check_password_policy, verify_station_secret
from chargeward.errors import ConfigError, Conflict, CredentialStoreError, IntegrityError
from chargeward.factory.credentials import (
    BASIC_AUTH_PASSWORD,
    POLICIES,
    PUK,
    UNAMBIGUOUS,
    generate_credentials,
)
from chargeward.factory.provisioning import (
    ChargerSpec,
    FactoryCa,
    Registration,
    provision_batch,
    read_registration,
    verify_charger,
    write_registration,
)
from tests.support.fleet import MODEL, TEST_PASSPHRASE, Pki
from tests.support.tufrepo import TufRepo

PRODUCT_SECRET = os.urandom(32)


@dataclass(frozen=True)
class Factory:
    """A production line: firmware PKI, charger CA, trust anchors, factory image."""

    pki: Pki
    ca: FactoryCa
    anchors: TrustAnchors
    bundle: Path


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Factory:
    d = tmp_path_factory.mktemp("factory")
    pki = Pki.create(d / "pki")
    secret = TEST_PASSPHRASE.encode

    ca_key = generate_key(f"file:{d}/charger-ca.key", secret)
    ca_cert = create_root_ca(ca_key, "ACME Charger CA", "ACME")
    csms_key = generate_key(f"file:{d}/csms-root.key", secret)
    csms_root = create_root_ca(csms_key, "ACME CSMS Root", "ACME")
    anchors = TrustAnchors(
        pki.root_pem.read_bytes(), TufRepo().root_json(), certificate_pem(csms_root).encode()
    )
    bundle = pki.bundle(d / "factory.cwb", "1.0.0", 3)
    return Factory(pki, FactoryCa(ca_key, ca_cert), anchors, bundle)


def _batch(line: Factory, out: Path, serials: list[str], **kw: object) -> list[Registration]:
    specs = [ChargerSpec(s, MODEL, vendor="ACME", customer="acme-energy") for s in serials]
    return provision_batch(
        specs,
        out,
        product_secret=PRODUCT_SECRET,
        ca=line.ca,
        anchors=line.anchors,
        factory_bundle=line.bundle,
        **kw,  # type: ignore[arg-type]
    )


def _secrets(state_dir: Path, serial: str, product_secret: bytes = PRODUCT_SECRET) -> Credentials:
    """What the factory can recover with the product secret (the charger uses its fused key)."""
    key = derive_device_key(product_secret, serial)
    return CredentialStore(state_dir, serial, key=key).load()


def _needles(creds: Credentials) -> list[bytes]:
    """Every plaintext form of a charger's secrets that must not be found at rest."""
    assert creds.device_key_pem is not None
    pem = creds.device_key_pem
    body = "".join(pem.strip().splitlines()[1:-1])
    der = DeviceKeyPair(device_public_key(pem), pem).private_der()
    return [v.encode() for v in creds.values()] + [body.encode(), der, PRODUCT_SECRET]


def _files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


def _assert_nothing_in_clear(files: list[Path], needles: list[bytes]) -> None:
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a plaintext secret is in {path}"


# -- credentials ----------------------------------------------------------------------------


def test_each_credential_is_long_and_random_enough() -> None:
    assert BASIC_AUTH_PASSWORD.entropy_bits >= 128
    for policy in POLICIES:
        if policy is not PUK:
            assert policy.length >= 16 and policy.entropy_bits >= 100, policy
    assert not set("0O1lIo") & set(UNAMBIGUOUS)
    creds = generate_credentials()
    check_password_policy(creds.basic_auth_password)  # OCPP 2.0.1: 16-40 printable ASCII
    assert 24 <= len(creds.basic_auth_password) <= 32
    assert creds.puk is not None and creds.puk.isdigit() and len(creds.puk) == 12
    assert "redacted" in repr(creds) and creds.basic_auth_password not in repr(creds)


def test_sealed_data_opens_only_with_its_key_and_associated_data() -> None:
    key = derive_device_key(PRODUCT_SECRET, "CP-1")
    assert key != derive_device_key(PRODUCT_SECRET, "CP-2")
    assert key != derive_device_key(os.urandom(32), "CP-1")
    blob = seal(key, b"secret", aad=b"CP-1|current")
    assert unseal(key, blob, aad=b"CP-1|current") == b"secret"
    changed = blob[:-1] + bytes([blob[-1] ^ 1])
    for k, b, aad in (
        (derive_device_key(PRODUCT_SECRET, "CP-2"), blob, b"CP-1|current"),
        (key, blob, b"CP-2|current"),
        (key, blob, b"CP-1|factory"),
        (key, changed, b"CP-1|current"),
        (key, blob[:10], b"CP-1|current"),
    ):
        with pytest.raises(IntegrityError):
            unseal(k, b, aad=aad)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        derive_device_key(b"short", "CP-1")


def test_device_unique_key_is_fused_once(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path, "CP-1")
    key = derive_device_key(PRODUCT_SECRET, "CP-1")
    store.fuse(key)
    store.fuse(key)  # a provisioning run resumed after a crash
    with pytest.raises(Conflict, match="different device-unique key"):
        store.fuse(derive_device_key(PRODUCT_SECRET, "CP-2"))
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o400


# -- one charger ----------------------------------------------------------------------------


def test_charger_gets_certificate_anchors_lock_and_sealed_secrets(
    line: Factory, tmp_path: Path
) -> None:
    (reg,) = _batch(line, tmp_path, ["CP-000001"], workers=1)
    state = StateDir(tmp_path / "CP-000001")
    ident = state.identity()
    assert (ident.station_id, ident.serial_number, ident.customer) == (
        "CP-000001",
        "CP-000001",
        "acme-energy",
    )
    cert = load_certificate(state.device_certificate_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-000001"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ACME"
    assert cert.issuer == line.ca.certificate.subject
    cert.verify_directly_issued_by(line.ca.certificate)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365.25
    assert 19.9 < years < 20.1
    assert reg.device_certificate_pem == certificate_pem(cert)
    # Trust anchors: ManufacturerRootCertificate, TUF root, CSMS root.
    assert state.trust_anchors() == [line.pki.root_cert]
    assert state.tuf_bootstrap_root() == line.anchors.tuf_root
    assert state.csms_roots_path.read_bytes() == line.anchors.csms_roots_pem
    # The fused key is the derived one, read-only; sealed files are private.
    store = state.credential_store()
    assert store.key_path.read_bytes() == derive_device_key(PRODUCT_SECRET, "CP-000001")
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o400
    assert stat.S_IMODE(store.path("current").stat().st_mode) == 0o600
    creds = _secrets(state.root, "CP-000001")
    assert state.password() == creds.basic_auth_password
    assert verify_station_secret(reg.password_hash, creds.basic_auth_password)
    assert not (state.secure / "credentials.json").exists()
    _assert_nothing_in_clear(_files(state.root), _needles(creds))
    assert verify_charger(state.root, PRODUCT_SECRET).device_certificate_sha256 == (
        reg.device_certificate_sha256
    )


def test_agent_init_seals_its_password_with_a_random_device_key(
    line: Factory, tmp_path: Path
) -> None:
    password = "given-at-the-bench-0123456789"
    provision(
        tmp_path / "c",
        identity=Identity("CP-9", MODEL, "ACME", "CP-9"),
        password=password,
        roots_pem=line.anchors.manufacturer_roots_pem,
        factory_bundle=line.bundle,
    )
    state = StateDir(tmp_path / "c")
    assert state.password() == password
    _assert_nothing_in_clear(_files(state.root), [password.encode()])
    with pytest.raises(CredentialStoreError):  # no product secret derives this key
        _secrets(state.root, "CP-9")


# -- refused inputs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two(line: Factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two")
    _batch(line, out, ["CP-A", "CP-B"], workers=1)
    return out


def _copy(two: Path, tmp_path: Path, serial: str) -> StateDir:
    import shutil

    shutil.copytree(two / serial, tmp_path / serial)
    return StateDir(tmp_path / serial)


def test_wrong_product_secret_is_refused_clearly(two: Path) -> None:
    with pytest.raises(CredentialStoreError, match="cannot open the current credentials of CP-A"):
        verify_charger(two / "CP-A", os.urandom(32))


def test_tampered_credentials_are_refused(two: Path, tmp_path: Path) -> None:
    state = _copy(two, tmp_path, "CP-A")
    path = state.credential_store().path("current")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CredentialStoreError, match="changed file"):
        state.password()


def test_credentials_swapped_between_chargers_are_refused(two: Path, tmp_path: Path) -> None:
    a, b = _copy(two, tmp_path, "CP-A"), _copy(two, tmp_path, "CP-B")
    b_path = b.credential_store().path("current")
    b_path.write_bytes(a.credential_store().path("current").read_bytes())
    with pytest.raises(CredentialStoreError, match="another charger"):
        b.password()
    # Even with both keys fused alike, the serial and purpose bind each file.
    a_store = a.credential_store()
    a_path = a_store.path("current")
    a_path.write_bytes(a_store.path("factory").read_bytes())
    with pytest.raises(CredentialStoreError):
        a.password()
    key = derive_device_key(PRODUCT_SECRET, "CP-A")
    other_serial = CredentialStore(a.root, "CP-B", key=key)
    with pytest.raises(CredentialStoreError):
        other_serial.load("factory")


def test_batch_refuses_duplicates_and_existing_chargers(line: Factory, two: Path) -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        _batch(line, two / "dup", ["CP-X", "CP-X"])
    with pytest.raises(Conflict, match="provisioned once"):
        _batch(line, two, ["CP-A"])
    with pytest.raises(ConfigError, match="serial number"):
        _batch(line, two / "bad", ["../CP-Y"])


# -- factory reset --------------------------------------------------------------------------


def test_factory_reset_restores_own_credentials_and_keeps_anti_rollback(
    two: Path, tmp_path: Path
) -> None:
    state = _copy(two, tmp_path, "CP-A")
    original = _secrets(state.root, "CP-A")
    state.set_password("changed-by-the-operator-42")
    (state.downloads / "x.part").write_bytes(b"partial")
    state.set_last_status("Downloading", 7)
    state.set_setting("OCPPCommCtrlr.HeartbeatInterval", 5)
    state.raise_rollback_floor(9)
    floor_time = state.raise_time_floor(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    slot_a = state.slot_info("a")

    factory_reset(state.root)

    assert _secrets(state.root, "CP-A") == original
    assert state.password() == original.basic_auth_password
    assert not (state.root / "downloads").exists()
    assert state.last_status() == {}
    assert state.settings() == {}
    assert state.rollback_floor() == 9
    assert state.time_floor() == floor_time
    assert state.slot_info("a") == slot_a
    assert state.trust_anchors() and state.tuf_bootstrap_root() is not None
    assert state.identity().customer == "acme-energy"


def test_factory_reset_refuses_a_swapped_factory_copy(two: Path, tmp_path: Path) -> None:
    a, b = _copy(two, tmp_path, "CP-A"), _copy(two, tmp_path, "CP-B")
    b.credential_store().path("factory").write_bytes(
        a.credential_store().path("factory").read_bytes()
    )
    before = b.credential_store().path("current").read_bytes()
    with pytest.raises(CredentialStoreError):
        factory_reset(b.root)
    assert b.credential_store().path("current").read_bytes() == before  # nothing changed


# -- a production batch ---------------------------------------------------------------------


def test_registration_file_holds_hashes_and_public_data_only(line: Factory, tmp_path: Path) -> None:
    serials = [f"CP-R{n}" for n in range(4)]
    regs = _batch(line, tmp_path / "out", serials, workers=2)
    path = tmp_path / "out" / "registration.json"
    write_registration(path, regs)
    entries = read_registration(path)
    assert [e["serial_number"] for e in entries] == serials
    assert set(entries[0]) == {
        "station_id",
        "serial_number",
        "model",
        "vendor",
        "customer",
        "password_hash",
        "device_certificate_sha256",
        "device_certificate_pem",
    }
    for entry in entries:
        creds = _secrets(tmp_path / "out" / entry["serial_number"], entry["serial_number"])
        assert entry["password_hash"].startswith("$argon2id$")
        assert verify_station_secret(entry["password_hash"], creds.basic_auth_password)
        _assert_nothing_in_clear([path], _needles(creds))
    assert json.loads(path.read_text())["format"] == "chargeward-factory-registration/1"


CHARGERS = 1000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_1000_chargers_get_1000_distinct_credentials_none_in_clear(
    line: Factory, tmp_path: Path
) -> None:
    serials = [f"CP-{n:06d}" for n in range(1, CHARGERS + 1)]
    out = tmp_path / "batch"
    started = time.perf_counter()
    regs = _batch(line, out, serials)
    write_registration(out / "registration.json", regs)
    elapsed = time.perf_counter() - started
    print(f"\nprovisioned {CHARGERS} chargers in {elapsed:.1f} s")

    creds = {s: _secrets(out / s, s) for s in serials}
    for field in ("basic_auth_password", "web_ui_password", "puk", "ap_password", "device_key_pem"):
        values = {getattr(c, field) for c in creds.values()}
        assert len(values) == CHARGERS, field
    certs = [load_certificate(r.device_certificate_pem) for r in regs]
    assert len({c.serial_number for c in certs}) == CHARGERS
    assert len({r.password_hash for r in regs}) == CHARGERS

    registration = [out / "registration.json"]
    for serial in serials:
        needles = _needles(creds[serial])
        _assert_nothing_in_clear(_files(out / serial) + registration, needles)

    # Factory reset of a sample: each gets its own original credentials back, still unique.
    sample = serials[::50]
    for serial in sample:
        state = StateDir(out / serial)
        state.set_password("operator-chose-this-one")
        factory_reset(state.root)
        assert _secrets(state.root, serial) == creds[serial]
        assert state.password() == creds[serial].basic_auth_password
    assert len({StateDir(out / s).password() for s in sample}) == len(sample)
