"""Typed dependencies of the routes: the app's state, who the caller is, and which Hub token serves it.

``create_app`` puts one ``AppState`` on ``app.state.tuneplan``; routes declare what they need with the ``...Dep``
aliases below and never reach into ``app.state`` themselves. Every dependency is ``async`` and does no I/O: FastAPI
runs a plain ``def`` dependency in its thread pool, and a request must not wait for a thread just to learn who it is.
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


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tuneplan
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_hub(state: StateDep) -> HubClient:
    return state.hub


async def get_service(state: StateDep) -> EstimateService:
    return state.service


async def get_runner(state: StateDep) -> JobRunner:
    return state.runner


async def get_lanes(state: StateDep) -> Lanes:
    return state.lanes


API_TOKEN = HTTPBearer(
    auto_error=False,
    scheme_name="api_token",
    description="The server's API token (TUNEPLAN_API_TOKEN) as 'Authorization: Bearer <token>': the jobs API needs "
    "it when the server has one; it also lets the server's own HF_TOKEN serve the request.",
)


async def get_caller(
    request: Request,
    state: StateDep,
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
) -> Caller:
    """Who sent the request: its API token (checked in constant time), its address, its own Hub token."""
    client = request.client.host if request.client is not None else None
    token = credentials.credentials if credentials is not None else None
    return identify(state.settings, token, client, clean_token(x_hf_token))


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_hub_token(caller: CallerDep, state: StateDep) -> str | None:
    """The Hub token for the caller's lookups: its own ``X-HF-Token``, else the server's if it carries the API
    token, else none (public repos only)."""
    return caller.hub_token(state.settings)


async def get_jobs_caller(caller: CallerDep, state: StateDep) -> Caller:
    """The caller of a jobs route, once it may use the jobs API (401/403 otherwise)."""
    check_jobs_access(state.settings, caller)
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
HubDep = Annotated[HubClient, Depends(get_hub)]
ServiceDep = Annotated[EstimateService, Depends(get_service)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
LanesDep = Annotated[Lanes, Depends(get_lanes)]
HubTokenDep = Annotated[str | None, Depends(get_hub_token)]
JobsCallerDep = Annotated[Caller, Depends(get_jobs_caller)]
