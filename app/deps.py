"""Typed dependencies of the routes: the app's state, who the caller is, and which Hub token serves it.

``create_app`` puts one ``AppState`` on ``app.state.tuneplan``; a route declares ``ContextDep`` (or
``JobsContextDep``, which also checks that the caller may use the jobs API) and never reaches into ``app.state``
itself. The dependencies are ``async`` and do no I/O: FastAPI runs a plain ``def`` dependency in its thread pool,
and a request must not wait for a thread just to learn who it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.hub import HubClient, clean_token
from app.jobs.runner import JobRunner
from app.lanes import Lanes
from app.security import Caller, check_jobs_access, identify
from app.service import EstimateService
from app.settings import Settings


@dataclass(frozen=True)
class AppState:
    """What one app instance owns."""

    settings: Settings
    hub: HubClient
    service: EstimateService
    runner: JobRunner
    lanes: Lanes


@dataclass(frozen=True)
class Context:
    """What a route needs: the app's state and who the caller is (one dependency, so a request solves one, not a
    dozen: FastAPI's dependency resolution costs about as much per dependency as a cached estimate)."""

    state: AppState
    caller: Caller

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def service(self) -> EstimateService:
        return self.state.service

    @property
    def runner(self) -> JobRunner:
        return self.state.runner

    @property
    def lanes(self) -> Lanes:
        return self.state.lanes

    @property
    def hub(self) -> HubClient:
        return self.state.hub

    @property
    def hub_token(self) -> str | None:
        """The Hub token for the caller's lookups: its own ``X-HF-Token``, else the server's if it carries the API
        token, else none (public repos only)."""
        return self.caller.hub_token(self.state.settings)


API_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="api_token",
    description="The server's API token (TUNEPLAN_API_TOKEN) as 'Authorization: Bearer <token>': the jobs API needs "
    "it when the server has one; it also lets the server's own HF_TOKEN serve the request.",
)


async def get_context(
    request: Request,
    x_hf_token: Annotated[
        str | None,
        Header(
            alias="X-HF-Token",
            max_length=1024,
            description="Your Hugging Face token, for gated/private repos. Used for this request only; never logged "
            "or stored.",
        ),
    ] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_TOKEN)] = None,
) -> Context:
    """The app's state and the caller: its API token (checked in constant time), its address, its own Hub token."""
    state: AppState = request.app.state.tuneplan
    client = request.client.host if request.client is not None else None
    token = credentials.credentials if credentials is not None else None
    return Context(state, identify(state.settings, token, client, clean_token(x_hf_token)))


ContextDep = Annotated[Context, Depends(get_context)]


async def get_jobs_context(ctx: ContextDep) -> Context:
    """The context of a jobs route, once the caller may use the jobs API (401/403 otherwise)."""
    check_jobs_access(ctx.settings, ctx.caller)
    return ctx


JobsContextDep = Annotated[Context, Depends(get_jobs_context)]
