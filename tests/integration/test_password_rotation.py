"""BasicAuthPassword rotation (SetVariables SecurityCtrlr.BasicAuthPassword) never locks a
station out: the real agent seals the new password before answering, the server keeps both
hashes until the answer or a login with the new password, then drops the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargeward.agent import storage
from chargeward.errors import TransportError
from chargeward.server.stations.station_security import rotate_password, security_view
from tests.support.fleet import Pki, basic
from tests.support.tls import TlsPki, provision_charger, running_agent, running_csms, try_connect

OLD = "rotation-test-password-0123"


async def _pending(csms: object, station_id: str) -> bool:
    async with csms.db.session() as s:  # type: ignore[attr-defined]
        return (await security_view(s, station_id)).password_rotation_pending


async def test_rotation_commits_on_accepted(tmp_path: Path, pki: Pki, factory_bundle: Path) -> None:
    tls_pki = TlsPki.create(tmp_path / "tls")
    state = provision_charger(
        tmp_path, pki, factory_bundle, tls_pki, "CP-PW", OLD, certificate=False
    )
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-PW", OLD, 2)
        async with running_agent(state, csms.url):
            await csms.wait(lambda: csms.registry.get("CP-PW"), "the station to connect")
            result = await rotate_password(csms.db, csms.registry, "CP-PW", actor="alice")
            assert result.status == "Accepted"
        new = state.password()
        assert new != OLD
        assert not await _pending(csms, "CP-PW")
        ctx = tls_pki.client_context()
        assert (
            await try_connect(csms.url + "CP-PW", ssl_context=ctx, auth=basic("CP-PW", OLD)) == 401
        )
        assert (
            await try_connect(csms.url + "CP-PW", ssl_context=ctx, auth=basic("CP-PW", new)) == 101
        )
        trail = [a for a, _ in await csms.audit("CP-PW")]
        assert "station.password_rotation_started" in trail
        assert "station.password_rotated" in trail
    assert new not in (tmp_path / "srv").joinpath("chargeward.db").read_bytes().decode("latin-1")


async def test_lost_answer_never_locks_the_station_out(
    tmp_path: Path, pki: Pki, factory_bundle: Path
) -> None:
    tls_pki = TlsPki.create(tmp_path / "tls")
    state = provision_charger(
        tmp_path, pki, factory_bundle, tls_pki, "CP-PW", OLD, certificate=False
    )
    async with running_csms(tmp_path / "srv", tls_pki) as csms:
        await csms.add_station("CP-PW", OLD, 2)
        async with running_agent(state, csms.url) as agent:
            await csms.wait(lambda: csms.registry.get("CP-PW"), "the station to connect")

            def cut(step: str) -> None:
                # The new password is sealed on flash; the connection dies before the answer.
                if step == "credentials.enc:renamed" and agent._cp is not None:
                    agent._cp._connection.transport.abort()
                    agent.stop()

            storage.set_fault_hook(cut)
            try:
                with pytest.raises(TransportError, match="stays pending"):
                    await rotate_password(csms.db, csms.registry, "CP-PW", actor="alice")
            finally:
                storage.set_fault_hook(None)
        new = state.password()
        assert new != OLD
        assert await _pending(csms, "CP-PW")
        # While the rotation is pending, the old password still works (and does not confirm).
        ctx = tls_pki.client_context()
        url = csms.url + "CP-PW"
        assert await try_connect(url, ssl_context=ctx, auth=basic("CP-PW", OLD)) == 101
        assert await _pending(csms, "CP-PW")
        # The station comes back with the password it holds: the new one; the old one is gone.
        await csms.wait(lambda: csms.registry.get("CP-PW") is None, "the probe to leave")
        async with running_agent(state, csms.url):
            await csms.wait(lambda: csms.registry.get("CP-PW"), "the station to reconnect")
        assert not await _pending(csms, "CP-PW")
        assert await try_connect(url, ssl_context=ctx, auth=basic("CP-PW", OLD)) == 401
        assert await try_connect(url, ssl_context=ctx, auth=basic("CP-PW", new)) == 101
        details = [d for a, d in await csms.audit("CP-PW") if a == "station.password_rotated"]
        assert details == [{"confirmed_by": "login with the new password"}]
