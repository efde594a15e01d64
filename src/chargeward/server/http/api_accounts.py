"""REST API for logins, operator accounts and scoped API tokens, as an ``APIRouter``.

    POST   /api/v1/auth/login                    {username, password, totp} -> session token
    POST   /api/v1/auth/logout                   ends the calling session
    GET    /api/v1/auth/me                       the caller: name, role, permissions
    POST   /api/v1/auth/totp/enrolment           a TOTP secret for one's account without one
    POST   /api/v1/auth/totp/enrolment/confirm   {code}: enrols it; every session ends
    GET    /api/v1/roles                         every role and its permissions
    POST   /api/v1/tokens                        {name, scopes, expires_in} -> token (once)
    GET    /api/v1/tokens                        the caller's tokens (all: users:manage)
    DELETE /api/v1/tokens/{token_id}             revoke
    GET    /api/v1/users                         users:manage, as every route below
    POST   /api/v1/users                         {username, password, role} -> TOTP URI (once)
    GET    /api/v1/users/{username}
    PUT    /api/v1/users/{username}/role         {role}
    PUT    /api/v1/users/{username}/password     {password}
    POST   /api/v1/users/{username}/totp/reset   forget the TOTP: the user enrols again
    POST   /api/v1/users/{username}/disable      and /enable

Permissions are in :mod:`chargeward.server.http.authz`; every change is in the audit log.  A role
change, a password change, a TOTP reset and disabling an account end the user's sessions and
API tokens; a privileged account without TOTP logs in to a session that may only enrol
(403 ``totp_enrolment_required`` elsewhere; ADR 0028).

    $ curl -X POST $API/api/v1/auth/login \\
        -d '{"username": "alice", "password": "...", "totp": "492039"}'
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from chargeward.server.auth import accounts, sessions, tokens, totp
from chargeward.server.auth.roles import ROLE_PERMISSIONS
from chargeward.server.common.schemas import RowId
from chargeward.server.http.authz import CurrentPrincipal, client_address
from chargeward.server.state import ServerState

router = APIRouter(tags=["accounts"])


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.chargeward
    return state


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(default=None, max_length=10)


class SessionView(BaseModel):
    token: str
    username: str
    role: str
    expires_at: dt.datetime
    idle_timeout: int
    totp_enrolment_required: bool = False  # this session may only enrol TOTP


class PrincipalView(BaseModel):
    name: str
    role: str | None
    kind: str
    permissions: list[str]
    customer: str | None = None
    totp_enrolment_required: bool = False  # nothing but TOTP enrolment until then


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=50)
    expires_in: int = Field(ge=60, le=int(tokens.MAX_LIFETIME.total_seconds()))


class TokenView(BaseModel):
    id: int
    name: str
    owner: str | None
    role: str | None
    scopes: list[str] | None
    created_by: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class MintedTokenView(TokenView):
    token: str


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: str = Field(max_length=30)
    # a customer account: operator or auditor of that customer's stations only
    customer: str | None = Field(default=None, min_length=1, max_length=64)


class RoleChange(BaseModel):
    role: str = Field(max_length=30)


class PasswordChange(BaseModel):
    password: str = Field(min_length=1, max_length=1024)


class UserView(BaseModel):
    username: str
    role: str
    disabled: bool
    totp_enrolled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    customer: str | None = None


class EnrolmentView(BaseModel):
    username: str
    role: str
    totp_secret: str | None  # shown once, when TOTP is (re-)enrolled
    totp_uri: str | None
    totp_enrolment_required: bool = False  # the user enrols TOTP at the next login


class EnrolmentConfirm(BaseModel):
    code: str = Field(min_length=1, max_length=10)


@router.post("/api/v1/auth/login", response_model=SessionView)
async def login(body: LoginRequest, request: Request) -> SessionView:
    state = _state(request)
    async with state.db.session() as s:
        outcome = await sessions.login(
            s,
            body.username,
            body.password,
            body.totp,
            address=client_address(request),
            now=state.clock(),
        )
    if isinstance(outcome, accounts.Refusal):
        raise outcome  # after the commit: the failure counts
    return SessionView(**vars(outcome))


@router.post("/api/v1/auth/logout", status_code=204)
async def logout(request: Request, principal: CurrentPrincipal) -> None:
    state = _state(request)
    async with state.db.session() as s:
        await sessions.logout(s, principal, now=state.clock())


@router.post("/api/v1/auth/totp/enrolment", response_model=EnrolmentView)
async def begin_enrolment(request: Request, principal: CurrentPrincipal) -> EnrolmentView:
    state = _state(request)
    async with state.db.session() as s:
        enrolment = await totp.begin_enrolment(s, principal, now=state.clock())
    return EnrolmentView(**vars(enrolment))


@router.post("/api/v1/auth/totp/enrolment/confirm", status_code=204)
async def confirm_enrolment(
    body: EnrolmentConfirm, request: Request, principal: CurrentPrincipal
) -> None:
    state = _state(request)
    async with state.db.session() as s:
        refused = await totp.confirm_enrolment(
            s, principal, body.code, address=client_address(request), now=state.clock()
        )
    if refused is not None:
        raise refused  # after the commit: the failure counts


@router.get("/api/v1/auth/me", response_model=PrincipalView)
async def me(principal: CurrentPrincipal) -> PrincipalView:
    return PrincipalView(
        name=principal.name,
        role=principal.role,
        kind=principal.kind,
        permissions=sorted(principal.permissions),
        customer=principal.customer,
        totp_enrolment_required=principal.totp_enrolment_required,
    )


@router.get("/api/v1/roles", response_model=dict[str, list[str]])
async def roles(_: CurrentPrincipal) -> dict[str, list[str]]:
    return {role: sorted(perms) for role, perms in ROLE_PERMISSIONS.items()}


@router.post("/api/v1/tokens", response_model=MintedTokenView, status_code=201)
async def create_token(
    body: TokenRequest, request: Request, principal: CurrentPrincipal
) -> MintedTokenView:
    state = _state(request)
    async with state.db.session() as s:
        minted = await tokens.mint(
            s, principal, body.name, body.scopes, expires_in=body.expires_in, now=state.clock()
        )
    return MintedTokenView(token=minted.token, **vars(minted.view))


@router.get("/api/v1/tokens", response_model=list[TokenView])
async def list_tokens(request: Request, principal: CurrentPrincipal) -> list[TokenView]:
    async with _state(request).db.session() as s:
        return [TokenView(**vars(t)) for t in await tokens.list_tokens(s, principal)]


@router.delete("/api/v1/tokens/{token_id}", response_model=TokenView)
async def revoke_token(token_id: RowId, request: Request, principal: CurrentPrincipal) -> TokenView:
    state = _state(request)
    async with state.db.session() as s:
        return TokenView(**vars(await tokens.revoke(s, principal, token_id, now=state.clock())))


@router.get("/api/v1/users", response_model=list[UserView])
async def list_users(request: Request) -> list[UserView]:
    async with _state(request).db.session() as s:
        return [UserView(**vars(u)) for u in await accounts.list_users(s)]


@router.post("/api/v1/users", response_model=EnrolmentView, status_code=201)
async def create_user(
    body: UserCreate, request: Request, principal: CurrentPrincipal
) -> EnrolmentView:
    state = _state(request)
    async with state.db.session() as s:
        enrolment = await accounts.create_user(
            s,
            body.username,
            body.password,
            body.role,
            actor=principal.name,
            now=state.clock(),
            customer=body.customer,
        )
    return EnrolmentView(**vars(enrolment))


@router.get("/api/v1/users/{username}", response_model=UserView)
async def get_user(username: str, request: Request) -> UserView:
    async with _state(request).db.session() as s:
        return UserView(**vars(await accounts.get_user(s, username)))


@router.put("/api/v1/users/{username}/role", response_model=EnrolmentView)
async def set_role(
    username: str, body: RoleChange, request: Request, principal: CurrentPrincipal
) -> EnrolmentView:
    state = _state(request)
    async with state.db.session() as s:
        enrolment = await accounts.set_role(
            s, username, body.role, actor=principal.name, now=state.clock()
        )
    return EnrolmentView(**vars(enrolment))


@router.put("/api/v1/users/{username}/password", status_code=204)
async def set_password(
    username: str, body: PasswordChange, request: Request, principal: CurrentPrincipal
) -> None:
    state = _state(request)
    async with state.db.session() as s:
        await accounts.set_password(
            s, username, body.password, actor=principal.name, now=state.clock()
        )


@router.post("/api/v1/users/{username}/totp/reset", response_model=UserView)
async def reset_totp(username: str, request: Request, principal: CurrentPrincipal) -> UserView:
    state = _state(request)
    async with state.db.session() as s:
        view = await accounts.reset_totp(s, username, actor=principal.name, now=state.clock())
    return UserView(**vars(view))


@router.post("/api/v1/users/{username}/disable", response_model=UserView)
async def disable_user(username: str, request: Request, principal: CurrentPrincipal) -> UserView:
    return await _set_disabled(request, principal.name, username, disabled=True)


@router.post("/api/v1/users/{username}/enable", response_model=UserView)
async def enable_user(username: str, request: Request, principal: CurrentPrincipal) -> UserView:
    return await _set_disabled(request, principal.name, username, disabled=False)


async def _set_disabled(request: Request, actor: str, username: str, *, disabled: bool) -> UserView:
    state = _state(request)
    async with state.db.session() as s:
        view = await accounts.set_disabled(s, username, disabled, actor=actor, now=state.clock())
    return UserView(**vars(view))
