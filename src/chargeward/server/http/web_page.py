"""One dashboard request: its login session, the API client acting as it, CSRF and rendering.

Every page reads and every form writes through the REST API, called in-process
(``httpx.ASGITransport`` into this same application) with the login session's bearer token
(:class:`Page`).  A page's route takes ``page: SignedIn`` (a fragment's ``_: Fragment`` before
it, a form's ``data: Posted``); :func:`chargeward.server.http.web.install` turns the exceptions
here into the login redirect, an error page (or fragment) and a 403.

- The session token lives in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over
  HTTPS); a request without a valid session is redirected to ``/login``.
- Every form carries a CSRF token: an HMAC of the session token (of a login nonce cookie on the
  login form), checked before anything else; a POST without it is refused with 403 and changes
  nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from chargeward.server.common.inputs import same_secret
from chargeward.server.http.authz import client_address

HERE = Path(__file__).resolve().parent / "web_assets"
SESSION_COOKIE = "cw_session"
LOGIN_COOKIE = "cw_login"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class Refused(Exception):
    """The API refused a call the page made: its status and message, shown to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class NeedLogin(Exception):
    """The request has no valid login session: a page redirects to /login, a fragment 401s."""


class NeedEnrolment(Exception):
    """The session's account must enrol TOTP first: a page redirects to /totp-enrolment."""


ENROLMENT_PAGE = "/totp-enrolment"


def csrf_token(secret: str) -> str:
    """The form token for a session (or login nonce): only its holder can compute it."""
    return hmac.new(secret.encode(), b"chargeward dashboard form", hashlib.sha256).hexdigest()


class Page:
    """One browser request: its session, an API client acting as that session, rendering."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.token = request.cookies.get(SESSION_COOKIE, "")
        self.me: dict[str, Any] = {}
        address = client_address(request)
        self.api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app, client=(address, 0)),
            base_url="http://dashboard.internal",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    async def __aenter__(self) -> Page:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.api.aclose()

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.api.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300] or f"HTTP {r.status_code}"
            raise Refused(r.status_code, message)
        if not r.content:
            return None
        return (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        )

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def signed_in(self) -> bool:
        if not self.token:
            return False
        try:
            self.me = await self.get("/api/v1/auth/me")
        except Refused as e:
            if e.status == 401:
                return False
            raise
        return True

    def can(self, permission: str) -> bool:
        return permission in self.me.get("permissions", ())

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(
            me=self.me,
            can=self.can,
            csrf=csrf_token(self.token) if self.token else "",
            path=self.request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def form(self) -> dict[str, str] | None:
        """The posted form, or None when its CSRF token does not belong to this session."""
        data = {k: str(v) for k, v in (await self.request.form()).items()}
        given = data.pop("csrf", "")
        if not self.token or not same_secret(given, csrf_token(self.token)):
            return None
        return data


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def seg(value: object) -> str:
    """One path segment of the dashboard's own API calls, quoted: an id with ``?``, ``#`` or
    ``/`` stays that id (``/releases/%3F`` once asked for the release list; issue 26)."""
    return quote(str(value), safe="")


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def refused_page(page: Page, e: Refused) -> HTMLResponse:
    return page.render("error.html", status=e.status, message=e.message)


def csrf_refused(page: Page) -> HTMLResponse:
    return page.render(
        "error.html",
        status=403,
        message="This form has expired or did not come from this dashboard (CSRF token "
        "missing or wrong). Nothing was changed; reload the page and try again.",
    )


class BadForm(Exception):
    """A POST whose CSRF token does not belong to the session: refused, nothing changed."""


async def _signed_in(request: Request) -> AsyncIterator[Page]:
    async with Page(request) as page:
        request.state.page = page
        if not await page.signed_in():
            raise NeedLogin
        if page.me.get("totp_enrolment_required") and request.url.path != ENROLMENT_PAGE:
            raise NeedEnrolment  # nothing but enrolment until then (ADR 0028)
        yield page


async def _fragment(request: Request) -> None:
    request.state.fragment = True


async def _posted(request: Request, page: Annotated[Page, Depends(_signed_in)]) -> dict[str, str]:
    data = await page.form()
    if data is None:
        raise BadForm
    return data


# A page's route takes ``page: SignedIn`` (a fragment's ``_: Fragment`` before it, a form's
# ``data: Posted``); the handlers of :func:`chargeward.server.http.web.install` turn a missing
# session, a refused API call and a bad CSRF token into the login redirect, an error page
# (or fragment) and a 403.
SignedIn = Annotated[Page, Depends(_signed_in)]
Fragment = Annotated[None, Depends(_fragment)]
Posted = Annotated[dict[str, str], Depends(_posted)]


def breakdown(stations: list[Mapping[str, Any]], key: str) -> list[tuple[str, int]]:
    counts = Counter(str(s.get(key) or "unknown") for s in stations)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
