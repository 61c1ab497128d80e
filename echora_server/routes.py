"""The route table: every HTTP route, with what the OpenAPI document says of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from echora_server.handlers import auth, health, members, site
from echora_server.metrics import get_metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    authenticated: bool = True
    # Status codes and what they mean, beyond the common error responses.
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    content_type: str = "application/json"


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, "Liveness", "ops", authenticated=False),
    Route(
        "GET",
        "/readyz",
        health.readyz,
        "Readiness: database, migrations, storage",
        "ops",
        authenticated=False,
        responses={200: "Ready", 503: "A dependency is down"},
    ),
    Route(
        "GET",
        "/metrics",
        get_metrics,
        "Prometheus metrics",
        "ops",
        authenticated=False,
        content_type="text/plain",
    ),
    Route(
        "GET",
        "/api/openapi.json",
        site.openapi_document,
        "This OpenAPI document",
        "ops",
        authenticated=False,
    ),
    Route(
        "POST",
        "/api/auth/login",
        auth.login,
        "Log in with a password (sets the session cookie)",
        "auth",
        body=auth.LoginBody,
        authenticated=False,
        responses={200: "Logged in", 401: "Wrong username or password", 429: "Too many attempts"},
    ),
    Route(
        "POST",
        "/api/auth/logout",
        auth.logout,
        "Log out (ends the session)",
        "auth",
        authenticated=False,
    ),
    Route(
        "POST",
        "/api/tokens",
        auth.create_token,
        "Create an API token (logged in, or with username and password)",
        "auth",
        body=auth.TokenBody,
        authenticated=False,
        responses={201: "The token; its secret is shown only here", 401: "Not authenticated"},
    ),
    Route("GET", "/api/tokens", auth.list_tokens, "List my API tokens", "auth"),
    Route(
        "DELETE",
        "/api/tokens/{token_id}",
        auth.revoke_token,
        "Revoke one of my API tokens",
        "auth",
        responses={204: "Revoked", 404: "No such token of mine"},
    ),
    Route("GET", "/api/me", members.get_me, "Who am I, and my workspaces", "workspaces"),
    Route(
        "GET",
        "/api/workspaces/{workspace_id}/members",
        members.list_members,
        "List a workspace's members",
        "workspaces",
        responses={200: "OK", 404: "Not a member"},
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/members",
        members.add_member,
        "Add a user to a workspace (owners and admins)",
        "workspaces",
        body=members.AddMemberBody,
        responses={201: "Added", 403: "Not an owner or admin", 404: "No such workspace or user"},
    ),
    Route(
        "DELETE",
        "/api/workspaces/{workspace_id}/members/{user_id}",
        members.remove_member,
        "Remove a member (owners and admins; anyone may leave)",
        "workspaces",
        responses={204: "Removed", 403: "Not allowed", 404: "No such member", 409: "Last owner"},
    ),
    Route(
        "GET",
        "/",
        site.index,
        "The browser client",
        "client",
        authenticated=False,
        content_type="text/html",
    ),
)

STATIC_PREFIX = "/static"


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_static(STATIC_PREFIX, site.static_root(), append_version=True)
