"""Chromium for the browser tests: Debian's ``/usr/bin/chromium`` (from ``make system-deps``),
driven by Playwright, which never downloads a browser of its own here.

The dashboard is served over https with a lab certificate (:class:`chargeward.local.LabTls`,
one per session).  Chromium accepts it because it is launched with the SHA-256 of the
certificate's public key in ``--ignore-certificate-errors-spki-list``: only a server holding
that key passes, any other certificate error still stops the page (adding a CA to Chromium's
NSS store needs ``certutil``, which the image does not have).  Playwright's own HTTP client
(``page.request``, in its Node.js driver) trusts the lab CA through ``NODE_EXTRA_CA_CERTS``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from chargeward.local import LabTls
from tests.support.browser import CHROMIUM, SHOTS


@pytest.fixture(scope="session")
def lab_tls() -> LabTls:
    """The https certificate of every server the browser tests start."""
    return LabTls.create()


@pytest.fixture
async def browser(
    lab_tls: LabTls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pin = f"--ignore-certificate-errors-spki-list={lab_tls.spki_sha256()}"
    ca = tmp_path / "lab-csms-ca.pem"
    ca.write_text(lab_tls.ca_pem)
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(ca))  # read when the driver starts
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", pin])
        try:
            yield b
        finally:
            await b.close()
