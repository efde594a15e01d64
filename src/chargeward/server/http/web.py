"""The operators' web dashboard at ``/``: server-rendered pages over the REST API.

Every page reads and every form writes through the REST API, called in-process
(``httpx.ASGITransport`` into this same application) with the login session's bearer token:
the dashboard has no data access of its own, so what a role may see and do in the browser is
exactly what the API allows it, checked in one place (:mod:`chargeward.server.http.authz`; ADR
0014).  Login is the API's (password + TOTP, lockout, audit), called with the browser's
address.

- The session token lives in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over
  HTTPS); a request without a valid session is redirected to ``/login``.
- Every form carries a CSRF token: an HMAC of the session token (of a login nonce cookie on the
  login form), checked before anything else; a POST without it is refused with 403 and changes
  nothing.
- Live parts of a page (campaign progress) are HTML fragments the page's small script fetches
  every two seconds; without script the page still shows the figures as of its load.

Pages: ``/`` fleet overview, ``/campaigns`` (list, create form with a live preview of the
stations the selector matches), ``/campaigns/{id}`` (stages, counts, outcomes over time,
actions, roll back, per-station status timeline), ``/releases`` and ``/releases/{id}``
(components, findings, approvals; approve with an approval file and a TOTP code, publish),
``/security`` (alerts and security events), ``/audit`` (the audit log, each entry with a
"verify" page: its leaf hash, the signed checkpoint and the inclusion proof).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import fastapi
import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape

from chargeward.audit import merkle
from chargeward.audit.checkpoint import open_checkpoint, parse_vkey
from chargeward.audit.verify import entry_from_json
from chargeward.errors import BundleError, TrustError
from chargeward.server.auth import accounts
from chargeward.server.common import inputs
from chargeward.server.common.inputs import same_secret
from chargeward.server.http.authz import client_address
from chargeward.trust.approval import parse_approval_file

HERE = Path(__file__).resolve().parent / "web_assets"
SESSION_COOKIE = "cw_session"
LOGIN_COOKIE = "cw_login"
STATIC = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
RUN_STATES = (
    "succeeded", "pending", "waiting", "dispatched", "downloading", "installing",
    "rebooting", "soaking", "failed", "rolled_back", "skipped", "cancelled",
)  # fmt: skip

router = APIRouter(include_in_schema=False)
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


def _seg(value: object) -> str:
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
# ``data: Posted``); the handlers below turn a missing session, a refused API call and a bad
# CSRF token into the login redirect, an error page (or fragment) and a 403.
SignedIn = Annotated[Page, Depends(_signed_in)]
Fragment = Annotated[None, Depends(_fragment)]
Posted = Annotated[dict[str, str], Depends(_posted)]


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: its routes and the handlers of its exceptions."""

    def fragment(request: Request) -> bool:
        return bool(getattr(request.state, "fragment", False))

    async def need_login(request: Request, _: Exception) -> Response:
        return HTMLResponse("", status_code=401) if fragment(request) else to_login(request)

    async def refused(request: Request, e: Exception) -> Response:
        assert isinstance(e, Refused)
        if fragment(request):
            return HTMLResponse(f"<p role='alert'>{escape(e.message)}</p>", status_code=e.status)
        return refused_page(request.state.page, e)

    async def bad_form(request: Request, _: Exception) -> Response:
        return csrf_refused(request.state.page)

    async def need_enrolment(request: Request, _: Exception) -> Response:
        if fragment(request):
            return HTMLResponse("", status_code=403)
        return RedirectResponse(ENROLMENT_PAGE, status_code=303)

    app.add_exception_handler(NeedLogin, need_login)
    app.add_exception_handler(NeedEnrolment, need_enrolment)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(BadForm, bad_form)
    app.include_router(router)


def _safe_next(target: str | None) -> str:
    """Only a local path: never another site (``//host`` or ``/\\host``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


# -- login -----------------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    nonce = secrets.token_urlsafe(24)
    page = Page(request)
    async with page:
        page.token = ""
        resp = page.render("login.html", login_csrf=csrf_token(nonce), next=_safe_next(next))
    _set_cookie(request, resp, LOGIN_COOKIE, nonce, max_age=1800)
    return resp


@router.post("/login")
async def login(request: Request) -> Response:
    data = {k: str(v) for k, v in (await request.form()).items()}
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    page = Page(request)
    async with page:
        page.token = ""
        target = _safe_next(data.get("next"))
        if not nonce or not same_secret(data.get("csrf", ""), csrf_token(nonce)):
            return csrf_refused(page)
        state = request.app.state.chargeward
        async with state.db.session() as s:
            outcome = await accounts.login(
                s,
                data.get("username", "")[:64],
                data.get("password", "")[:1024],
                data.get("totp", "")[:10] or None,
                address=client_address(request),
                now=state.clock(),
            )
        if isinstance(outcome, accounts.Refusal):
            return page.render(
                "login.html",
                status=outcome.status,
                login_csrf=csrf_token(nonce),
                next=target,
                error=str(outcome),
                username=data.get("username", ""),
            )
    if outcome.totp_enrolment_required:  # a privileged account without TOTP enrols first
        target = ENROLMENT_PAGE
    done = RedirectResponse(target, status_code=303)
    _set_cookie(request, done, SESSION_COOKIE, outcome.token)
    done.delete_cookie(LOGIN_COOKIE, path="/")
    return done


@router.get(ENROLMENT_PAGE)
async def totp_enrolment(page: SignedIn) -> Response:
    """A new secret for the account without TOTP, shown once, and the form for a code."""
    enrolment = await page.call("POST", "/api/v1/auth/totp/enrolment")
    return page.render("totp_enrolment.html", enrolment=enrolment)


@router.post(ENROLMENT_PAGE)
async def confirm_totp_enrolment(page: SignedIn, data: Posted) -> Response:
    """Enrol with a code of the secret shown; the session ends, the next login needs a code."""
    code = data.get("code", "").strip()[:10]
    try:
        await page.call("POST", "/api/v1/auth/totp/enrolment/confirm", json={"code": code})
    except Refused as e:
        enrolment = await page.call("POST", "/api/v1/auth/totp/enrolment")
        return page.render(
            "totp_enrolment.html", status=e.status, enrolment=enrolment, error=e.message
        )
    resp = RedirectResponse("/login?next=/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    async with Page(request) as page:
        if await page.form() is None:
            return csrf_refused(page)
        with contextlib.suppress(Refused):  # already ended: the cookie goes either way
            await page.call("POST", "/api/v1/auth/logout")
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def _set_cookie(
    request: Request, resp: Response, name: str, value: str, max_age: int | None = None
) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- pages -----------------------------------------------------------------------------------------


def breakdown(stations: list[Mapping[str, Any]], key: str) -> list[tuple[str, int]]:
    counts = Counter(str(s.get(key) or "unknown") for s in stations)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@router.get("/")
async def overview(page: SignedIn) -> Response:
    stations = await page.get("/api/v1/stations")
    alerts = await page.get("/api/v1/alerts", state="active")
    support = await page.get("/api/v1/fleet/support", within_days=180)
    campaigns = await page.get("/api/v1/campaigns")
    releases = await page.get("/api/v1/releases") if page.can("releases:read") else []
    published = [r for r in releases if r["state"] == "published"]
    newest = max(published, key=lambda r: r["security_version"], default=None)
    behind = [
        s
        for s in stations
        if newest
        and s["model"] in newest["hardware_models"]
        and s["firmware_version"] != newest["version"]
    ]
    return page.render(
        "overview.html",
        total=len(stations),
        connected=sum(s["connected"] for s in stations),
        charts={
            "firmware version": ("version", breakdown(stations, "firmware_version")),
            "model": ("model", breakdown(stations, "model")),
            "site": ("site", breakdown(stations, "site_id")),
        },
        drift=[a for a in alerts if a["kind"] == "firmware_drift"],
        alerts=alerts,
        support=[
            r for r in support if {r["security_state"], r["feature_state"]} & {"ending", "ended"}
        ],
        support_unknown=sum(
            r["security_state"] == "unknown" and r["feature_state"] == "unknown" for r in support
        ),
        newest=newest,
        behind=len(behind),
        running=[c for c in campaigns if c["status"] in ("running", "awaiting_approval")],
    )


# -- campaigns ---------------------------------------------------------------------------------


@router.get("/campaigns")
async def campaign_list(page: SignedIn) -> Response:
    return await _campaigns_page(page)


async def _campaigns_page(
    page: Page, status: int = 200, error: str | None = None, form: Mapping[str, str] | None = None
) -> HTMLResponse:
    campaigns = await page.get("/api/v1/campaigns")
    releases = await page.get("/api/v1/releases")
    stations = await page.get("/api/v1/stations")
    return page.render(
        "campaigns.html",
        status=status,
        campaigns=sorted(campaigns, key=lambda c: -c["id"]),
        releases=sorted(releases, key=lambda r: -r["security_version"]),
        models=sorted({s["model"] for s in stations if s["model"]}),
        sites=sorted({s["site_id"] for s in stations if s["site_id"]}),
        error=error,
        form=form or {},
    )


def campaign_document(data: Mapping[str, str]) -> dict[str, Any]:
    """The API's campaign document from the create form; the API validates every field."""
    target: dict[str, Any] = {}
    if data.get("model"):
        target["models"] = [data["model"]]
    if data.get("site"):
        target["sites"] = [data["site"]]
    doc: dict[str, Any] = {
        "name": data.get("name", "").strip(),
        "release": data.get("release", ""),
        "target": target,
        "stages": {
            "canary": _number_or_percent(data.get("canary", "1")),
            "then": [s.strip() for s in data.get("stages", "100%").split(",") if s.strip()],
        },
    }
    for name in ("soak", "jitter", "download_ahead"):
        if data.get(name, "").strip():
            doc[name] = data[name].strip()
    if data.get("bypass_windows") == "on":
        doc["bypass_windows"] = True  # the API refuses it for anything but a security release
    return doc


def _number_or_percent(text: str) -> int | str:
    text = text.strip()
    number = inputs.row_id(text)
    return text if number is None else number


@router.post("/campaigns")
async def create_campaign(page: SignedIn, data: Posted) -> Response:
    try:
        made = await page.call("POST", "/api/v1/campaigns", json=campaign_document(data))
    except Refused as e:
        return await _campaigns_page(page, status=e.status, error=e.message, form=data)
    return RedirectResponse(f"/campaigns/{made['id']}", status_code=303)


@router.get("/campaigns/preview")
async def campaign_preview(
    _: Fragment, page: SignedIn, model: str = "", site: str = ""
) -> Response:
    """How many stations the create form's selector matches (a fragment)."""
    params = {k: v for k, v in (("model", model), ("site", site)) if v}
    matched = await page.get("/api/v1/stations", **params)
    sites = {x["id"]: x for x in await page.get("/api/v1/sites")}
    per_site = breakdown(matched, "site_id")
    return page.render(
        "preview.html", matched=len(matched), model=model, site=site, per_site=per_site, sites=sites
    )


# Outcomes charted over a campaign's life: a station entering the state counts once.
OUTCOMES = ("succeeded", "failed", "rolled_back", "deferred")
CHART_POINTS = 24


def outcome_series(
    runs: Sequence[Mapping[str, Any]], start: dt.datetime, end: dt.datetime
) -> tuple[list[dt.datetime], dict[str, list[int]]]:
    """Cumulative count of stations that entered each of :data:`OUTCOMES`, at
    :data:`CHART_POINTS` times from ``start`` to ``end`` (from the runs' timelines)."""
    span = max((end - start).total_seconds(), 1.0)
    times = [
        start + dt.timedelta(seconds=span * i / (CHART_POINTS - 1)) for i in range(CHART_POINTS)
    ]
    first: dict[str, list[dt.datetime]] = {o: [] for o in OUTCOMES}
    for run in runs:
        entered: dict[str, dt.datetime] = {}
        for when, state, *_ in run.get("timeline", ()):
            if state in first and state not in entered:
                with contextlib.suppress(ValueError):
                    entered[state] = dt.datetime.fromisoformat(when)
        for state, when in entered.items():
            first[state].append(when)
    series = {o: [sum(w <= t for w in first[o]) for t in times] for o in OUTCOMES}
    return times, series


def chart(runs: Sequence[Mapping[str, Any]], campaign: Mapping[str, Any]) -> dict[str, Any]:
    """The outcomes-over-time chart of the campaign page: polylines in a 600x160 box."""
    start = dt.datetime.fromisoformat(campaign["created_at"])
    now = dt.datetime.now(dt.UTC)
    ends = [dt.datetime.fromisoformat(r["finished_at"]) for r in runs if r.get("finished_at")]
    end = max(ends) if campaign["status"] in ("completed", "aborted") and ends else now
    times, series = outcome_series(runs, start, end)
    top = max([len(runs), 1])
    lines = {
        o: " ".join(
            f"{600 * i / (CHART_POINTS - 1):.1f},{160 - 160 * v / top:.1f}"
            for i, v in enumerate(values)
        )
        for o, values in series.items()
    }
    return {"times": times, "series": series, "lines": lines, "top": top}


async def _campaign_context(page: Page, ref: int) -> dict[str, Any]:
    campaign = await page.get(f"/api/v1/campaigns/{_seg(ref)}")
    runs = await page.get(f"/api/v1/campaigns/{_seg(ref)}/stations")
    return {"c": campaign, "runs": runs, "run_states": RUN_STATES, "chart": chart(runs, campaign)}


async def _campaign_page(page: Page, ref: int, status: int = 200, error: str = "") -> Response:
    context = await _campaign_context(page, ref)
    releases = await page.get("/api/v1/releases") if page.can("campaigns:write") else []
    # Any other release is offered: the API decides what a roll-back may go to.
    older = sorted(
        (r for r in releases if r["id"] != context["c"]["release_id"]),
        key=lambda r: -r["security_version"],
    )
    return page.render("campaign.html", status=status, error=error, rollback_to=older, **context)


@router.get("/campaigns/{ref}")
async def campaign_page(page: SignedIn, ref: int) -> Response:
    return await _campaign_page(page, ref)


@router.get("/campaigns/{ref}/live")
async def campaign_live(_: Fragment, page: SignedIn, ref: int) -> Response:
    return page.render("campaign_live.html", **await _campaign_context(page, ref))


@router.get("/campaigns/{ref}/stations/{station_id}")
async def station_run(page: SignedIn, ref: int, station_id: str) -> Response:
    campaign = await page.get(f"/api/v1/campaigns/{_seg(ref)}")
    run = await page.get(f"/api/v1/campaigns/{_seg(ref)}/stations/{_seg(station_id)}")
    detail = await page.get(f"/api/v1/stations/{_seg(station_id)}")
    return page.render("station_run.html", c=campaign, run=run, station=detail)


CAMPAIGN_ACTIONS = ("approve", "pause", "resume", "abort", "retry", "rollback")


@router.post("/campaigns/{ref}/{action}")
async def campaign_action(page: SignedIn, data: Posted, ref: int, action: str) -> Response:
    if action not in CAMPAIGN_ACTIONS:
        return page.render("error.html", status=404, message=f"no action {action!r}")
    body = {"json": {"release": data.get("release", "")}} if action == "rollback" else {}
    try:
        done = await page.call("POST", f"/api/v1/campaigns/{_seg(ref)}/{_seg(action)}", **body)
    except Refused as e:
        return await _campaign_page(page, ref, status=e.status, error=e.message)
    return RedirectResponse(f"/campaigns/{done['id']}", status_code=303)


# -- releases ----------------------------------------------------------------------------------


@router.get("/releases")
async def release_list(page: SignedIn) -> Response:
    releases = await page.get("/api/v1/releases")
    releases.sort(key=lambda r: -r["security_version"])
    return page.render("releases.html", releases=releases)


async def _release_page(
    page: Page, release_id: str, status: int = 200, error: str = "", notice: str = ""
) -> Response:
    release = await page.get(f"/api/v1/releases/{_seg(release_id)}")
    history = await page.get(f"/api/v1/releases/{_seg(release_id)}/approvals")
    proposal = None
    if release["state"] != "published" and history and history[-1]["state"] == "open":
        proposal = await page.get(f"/api/v1/proposals/{_seg(history[-1]['proposal'])}")
    return page.render(
        "release.html",
        status=status,
        error=error,
        notice=notice,
        r=release,
        history=history,
        proposal=proposal,
        docs=await _documents(page, release["id"], release),
    )


@router.get("/releases/{release_id}")
async def release_page(page: SignedIn, release_id: str) -> Response:
    return await _release_page(page, release_id)


@router.post("/releases/{release_id}/approve")
async def approve_release(page: SignedIn, data: Posted, release_id: str) -> Response:
    """An approver's signature (an approval file made with ``chargeward release approve
    --output`` on the approver's own machine: the key never reaches the server), confirmed
    with a fresh TOTP code of the person logged in."""
    code = data.get("totp", "").strip()
    try:
        approval = parse_approval_file(data.get("approval", "").strip())
        if not code:
            raise BundleError("enter the current code of your authenticator app to confirm")
    except BundleError as e:
        return await _release_page(page, release_id, status=400, error=str(e))
    release = await page.get(f"/api/v1/releases/{_seg(release_id)}")
    if approval.release_id not in (None, release["id"]):
        return await _release_page(
            page,
            release_id,
            status=400,
            error=f"this approval file is for release {approval.release_id[:12]}, "
            f"not {release['id'][:12]}",
        )
    body = {
        "keyid": approval.keyid,
        "signature": approval.signature,
        "roles": dict(approval.roles),
        "totp": code,
    }
    try:
        done = await page.call(
            "POST", f"/api/v1/proposals/{_seg(approval.proposal)}/approvals", json=body
        )
    except Refused as e:
        return await _release_page(page, release_id, status=e.status, error=e.message)
    return await _release_page(page, release_id, notice=f"Approval recorded: {done['summary']}")


@router.post("/releases/{release_id}/publish")
async def publish_release(page: SignedIn, data: Posted, release_id: str) -> Response:
    try:
        done = await page.call("POST", f"/api/v1/releases/{_seg(release_id)}/publish")
    except Refused as e:
        return await _release_page(page, release_id, status=e.status, error=e.message)
    return await _release_page(
        page, release_id, notice=f"Published as targets version {done['targets_version']}."
    )


async def _documents(page: Page, release_id: str, release: Mapping[str, Any]) -> dict[str, Any]:
    """The release's supply-chain documents the page summarizes (absent ones are skipped)."""
    out: dict[str, Any] = {}
    for name in release.get("documents", {}):
        try:
            out[name] = await page.get(
                f"/api/v1/releases/{_seg(release_id)}/documents/{_seg(name)}"
            )
        except Refused:
            continue
    return out


# -- security and audit ------------------------------------------------------------------------


@router.get("/security")
async def security(page: SignedIn) -> Response:
    alerts = await page.get("/api/v1/alerts")
    events = (  # the raw events are the audit trail's: audit:read, as in the API
        await page.get("/api/v1/security-events", limit=200) if page.can("audit:read") else None
    )
    return page.render("security.html", alerts=alerts, events=events)


AUDIT_PAGE = 100


@router.get("/audit")
async def audit_log(
    page: SignedIn, start: int | None = None, target: str = "", transaction_id: str = ""
) -> Response:
    """The audit log, a page of entries at a time (newest page first), filterable."""
    size = (await page.get("/api/v1/audit/tree"))["size"]
    first = max(0, size - AUDIT_PAGE) if start is None else max(0, min(start, size))
    filters = {k: v for k, v in (("target", target), ("transaction_id", transaction_id)) if v}
    entries = await page.get("/api/v1/audit", start=first, limit=AUDIT_PAGE, **filters)
    return page.render(
        "audit.html",
        entries=list(reversed(entries)),
        size=size,
        first=first,
        page_size=AUDIT_PAGE,
        target=target,
        transaction_id=transaction_id,
    )


@router.get("/audit/{index}")
async def audit_entry(
    page: SignedIn, index: Annotated[int, fastapi.Path(ge=0, le=2**63 - 1)]
) -> Response:
    """One entry, verified: its leaf recomputed, the latest signed checkpoint's signature
    under the log's key, and the inclusion proof from the leaf to the signed root."""
    found = await page.get("/api/v1/audit", start=index, limit=1)
    if not found or found[0]["leaf_index"] != index:
        raise Refused(404, f"no audit entry {index}")
    raw = found[0]
    try:
        note = await page.get("/api/v1/audit/checkpoints/latest")
    except Refused as e:
        if e.status != 404:
            raise
        note = None
    vkey = await page.get("/api/v1/audit/vkey")
    checks = await verify_entry(page, raw, note, vkey)
    return page.render("audit_entry.html", e=raw, checks=checks, vkey=vkey.strip())


async def verify_entry(
    page: Page, raw: Mapping[str, Any], note: str | None, vkey: str
) -> list[tuple[str, bool | None, str]]:
    """(check, passed or None when it could not run, what was found) for one entry."""
    entry = entry_from_json(dict(raw))
    leaf = merkle.leaf_hash(entry.leaf(entry.leaf_index))
    same = entry.leaf_hash == leaf
    checks: list[tuple[str, bool | None, str]] = [
        (
            "Entry unchanged since it was appended",
            same,
            f"leaf hash recomputed from the entry: {leaf.hex()}"
            + ("" if same else f"; stored at append time: {raw['leaf_hash']}"),
        )
    ]
    if not note:
        checks.append(("Signed checkpoint", None, "no checkpoint has been signed yet"))
        return checks
    try:
        checkpoint = open_checkpoint(note, parse_vkey(vkey.strip()))
    except TrustError as e:
        checks.append(("Signed checkpoint", False, str(e)))
        return checks
    checks.append(
        (
            "Signed checkpoint",
            True,
            f"tree of {checkpoint.size:,} entries, root {checkpoint.root_hash.hex()}, "
            f"signature verified under {checkpoint.origin}",
        )
    )
    if entry.leaf_index >= checkpoint.size:
        checks.append(
            (
                "Included under the signed root",
                None,
                f"entry {entry.leaf_index} is newer than the latest checkpoint "
                f"({checkpoint.size:,} entries); the next one will cover it",
            )
        )
        return checks
    proof = await page.get(
        "/api/v1/audit/proofs/inclusion", index=entry.leaf_index, size=checkpoint.size
    )
    try:
        merkle.verify_inclusion(
            leaf,
            entry.leaf_index,
            checkpoint.size,
            [bytes.fromhex(h) for h in proof["hashes"]],
            checkpoint.root_hash,
        )
    except (merkle.ProofError, ValueError) as e:
        checks.append(("Included under the signed root", False, str(e)))
    else:
        checks.append(
            (
                "Included under the signed root",
                True,
                f"inclusion proof of {len(proof['hashes'])} hashes leads from the recomputed "
                "leaf to the checkpoint's root",
            )
        )
    return checks


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
