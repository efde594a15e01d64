"""The REST API fuzzed with schemathesis from its own ``/api/openapi.json``, as every role.

The API is served over real HTTP on 127.0.0.1 (uvicorn) with two customers' fleets in its
database.  For every operation of the document and every caller (each role, a customer's
operator and auditor, a scoped token and no token at all) schemathesis generates requests
from the operation's schema and sends them.  Every response must be:

- no 5xx (``not_a_server_error``): bad input is a 4xx with the API's error shape;
- what the document says (``response_schema_conformance``): bodies, and error bodies too;
  requests are generated both valid for the schema and deliberately invalid;
- for a customer's accounts, free of anything of the other customer (station, site, release
  ids and its name).

Operations that end the caller's own credentials (log out, revoke a token, disable a user,
change a role or a password) run after all the others.  The counts go to
``reports/fuzz/api.json``.

The API is served over TLS (the test PKI's server certificate, verified by the client).  A
second, quick test sends the hostile values of issue 26 (point 6: non-ASCII, superscript,
full-width and Arabic-Indic digits, a 20-digit id, a ``?``, 5,000 characters, dates beyond
``datetime``'s range) as every path and query parameter of every operation, and to the
download and TUF routes the document leaves out: each answer is a 4xx with the error shape.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.failures import Failure, FailureGroup

from chargeward.server.auth import tenancy
from chargeward.server.state import TRUST_FILE
from tests.support.accounts_api import AccountsApi
from tests.support.fleet import TEST_PASSPHRASE, Pki
from tests.support.served_api import served_api
from tests.support.tenants import STATIONS, A, seed_two_customers
from tests.support.tls import TlsPki

EXAMPLES = 4  # requests per operation and caller: valid ones and invalid ones
LAST = {
    ("POST", "/api/v1/auth/logout"),
    ("DELETE", "/api/v1/tokens/{token_id}"),
    ("POST", "/api/v1/users/{username}/disable"),
    ("PUT", "/api/v1/users/{username}/role"),
    ("PUT", "/api/v1/users/{username}/password"),
}
REPORT = Path("reports/fuzz/api.json")


async def _seed(env: AccountsApi, pki: Pki, work: Path) -> dict[str, Any]:
    releases = await seed_two_customers(env, pki, work)
    # configured as in production: uploads verify against the manufacturer's root
    trust = env.state.data_dir / TRUST_FILE
    trust.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pki.root_pem, trust)
    tokens: dict[str, str | None] = {"anonymous": None, "admin": env.admin_token}
    for role in ("release-manager", "approver", "operator", "auditor"):
        tokens[role] = await env.login(await env.add_user(role.replace("-", ""), role))
    for name, role in (("olga", "operator"), ("ada", "auditor")):
        user = await env.add_user(name, role, customer=A)
        tokens[f"{role} of {A}"] = await env.login(user)
    c = await env.client()
    made = await c.post(
        "/api/v1/tokens",
        json={"name": "reader", "scopes": ["stations:read"], "expires_in": 3600},
        headers=env.bearer(tokens["operator"] or ""),
    )
    assert made.status_code == 201, made.text
    tokens["token:stations:read"] = made.json()["token"]
    foreign = [sid for sid, (customer, _) in STATIONS.items() if customer != A]
    return {"tokens": tokens, "foreign": [*foreign, "SITE-B", "fleet-b", releases["b"]]}


@dataclass
class Tally:
    url: str
    foreign: list[str]  # what a customer's account must never see
    session: requests.Session = field(default_factory=requests.Session)
    tried: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    by_caller: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def fuzz(self, operation: APIOperation, who: str, token: str | None) -> None:
        """EXAMPLES generated requests to one operation as one caller, each checked."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        route = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=self.url,
                session=self.session,
                headers=headers,
                timeout=30,
                verify=self.session.verify,  # not $REQUESTS_CA_BUNDLE: the test PKI's root
            )
            self.tried[who] += 1
            self.statuses.setdefault(route, Counter())[response.status_code] += 1
            self.by_caller.setdefault(who, Counter())[response.status_code] += 1
            label = f"{who}: {case.method} {case.formatted_path} -> {response.status_code}"
            try:
                case.validate_response(
                    response, checks=[not_a_server_error, response_schema_conformance]
                )
            except (Failure, FailureGroup) as e:  # every failure is listed, none shrunk
                found = e.exceptions if isinstance(e, FailureGroup) else [e]
                for f in found:
                    self.failures.append(f"{label}: {f.title}: {f.message[:300]}")
            if who.endswith(f" of {A}"):
                leaked = [value for value in self.foreign if value in response.text]
                if leaked:
                    self.failures.append(f"{label}: another customer's {leaked}")

        run()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_operation_as_every_caller_no_5xx_no_schema_break_no_other_customers_data(
    tmp_path: Path, pki: Pki, tls_pki: TlsPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)  # the audit signing key
    tls = tls_pki.server_context()
    with served_api(tmp_path / "srv", lambda env: _seed(env, pki, tmp_path), tls=tls) as (
        url,
        seeded,
    ):
        assert url.startswith("https://")
        ca = str(tls_pki.csms_ca_pem)
        schema = schemathesis.openapi.from_url(f"{url}/api/openapi.json", verify=ca)
        operations = [op.ok() for op in schema.get_all_operations()]
        assert len(operations) >= 80  # the whole API, not a part of it
        order = sorted(operations, key=lambda op: (op.method.upper(), op.path) in LAST)
        tally = Tally(url, seeded["foreign"])
        tally.session.verify = ca
        for operation in order:
            for who, token in seeded["tokens"].items():
                tally.fuzz(operation, who, token)
        codes = Counter(code for c in tally.statuses.values() for code in c.elements())
        report = {
            "operations": len(operations),
            "callers": sorted(seeded["tokens"]),
            "requests": dict(tally.tried),
            "total": sum(tally.tried.values()),
            "status_codes": dict(sorted(codes.items())),
            "status_codes_by_caller": {
                w: dict(sorted(c.items())) for w, c in tally.by_caller.items()
            },
            "status_codes_by_route": {
                r: dict(sorted(c.items())) for r, c in tally.statuses.items()
            },
            "failures": tally.failures,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"API fuzzing: {report['total']} requests, {len(operations)} operations, "
            f"{len(tally.tried)} callers, status codes {report['status_codes']}"
        )
        assert tally.failures == [], "\n".join(tally.failures[:25])
        assert all(n >= len(operations) for n in tally.tried.values()), tally.tried
        customer_routes = {f"{m} {p}" for m, p in tenancy.CUSTOMER_ROUTES}
        assert customer_routes <= set(tally.statuses), "customer routes never reached"


# Issue 26, point 6: each once answered 500 (or meant something else) somewhere in the API.
HOSTILE = (
    "\u00e9",  # non-ASCII: hmac.compare_digest raised TypeError
    "99999999999999999999",  # beyond every integer column
    "\u00b2",  # superscript 2: isdigit() is true, int() fails
    "\uff11",  # full-width 1: int() reads 1
    "\u0661",  # Arabic-Indic 1: int() reads 1
    "?",  # interpolated unquoted into a URL
    "a" * 5000,
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:00:00-01:00",  # after year 9999 in UTC
    "-1",
)


def _problem_or_page(r: httpx.Response) -> str | None:
    """Why ``r`` is not a refusal in the error shape (None: it is, or it is a success)."""
    if r.status_code >= 500:
        return f"{r.status_code} {r.text[:200]}"
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        body = r.json()
        if not isinstance(body.get("error"), dict) or not isinstance(
            body["error"].get("code"), str
        ):
            return f"{r.status_code} not the error shape: {r.text[:200]}"
    return None


@pytest.mark.timeout(120)
def test_hostile_path_and_query_values_are_refused_over_tls_without_server_errors(
    tmp_path: Path, pki: Pki, tls_pki: TlsPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEWARD_KEY_PASSPHRASE", TEST_PASSPHRASE)
    tls = tls_pki.server_context()
    with served_api(tmp_path / "srv", lambda env: _seed(env, pki, tmp_path), tls=tls) as (
        url,
        seeded,
    ):
        client = httpx.Client(base_url=url, verify=tls_pki.client_context(), timeout=30)
        doc = client.get("/api/openapi.json").json()
        callers = {w: seeded["tokens"][w] for w in ("admin", f"operator of {A}")}
        failures: list[str] = []
        sent = 0

        def send(who: str, method: str, path: str, params: dict[str, str] | None = None) -> None:
            nonlocal sent
            token = callers[who]
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = client.request(method, path, params=params, headers=headers)
            sent += 1
            why = _problem_or_page(r)
            if why is not None:
                failures.append(f"{who}: {method} {path} {params or ''} -> {why}")

        for path, item in doc["paths"].items():
            for method, op in item.items():
                if (method.upper(), path) in LAST:
                    continue  # would end the caller's own session
                params = [*item.get("parameters", []), *op.get("parameters", [])]
                names = [p["name"] for p in params if p["in"] == "path"]
                queries = [p["name"] for p in params if p["in"] == "query"]
                for value in HOSTILE if names or queries else ():
                    target = path
                    for name in names:
                        target = target.replace(f"{{{name}}}", quote(value, safe=""))
                    filled = path
                    for name in names:  # the path's own ids stay ordinary for the query run
                        filled = filled.replace(f"{{{name}}}", "x")
                    for who in callers if names else ():  # tenancy looks ids up too
                        send(who, method.upper(), target)
                    for q in queries:
                        send("admin", method.upper(), filled, {q: value})
        # Routes the document leaves out: signed download links and the TUF repository.
        for value in HOSTILE:
            send(
                "admin",
                "GET",
                "/firmware/sha256/" + "a" * 64,
                {
                    "station": "CP-A1",
                    "expires": "4102444800",
                    "sig": value,
                    "req": "0",
                },
            )
            send("admin", "GET", "/tuf/metadata/" + quote(value, safe="") + ".json")
            send("admin", "GET", "/tuf/targets/" + quote(value, safe=""))
        client.close()
        assert sent >= 1300, sent  # every operation with a parameter, every value
        assert failures == [], "\n".join(failures[:25])
