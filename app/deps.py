"""Typed dependencies of the routes: the settings, the estimate service, the job runner and the caller's Hub token.

``create_app`` puts one ``AppState`` on ``app.state.tuneplan``; routes declare what they need with the ``...Dep``
aliases below and never reach into ``app.state`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from app.hub import HubClient, clean_token
from app.jobs.runner import JobRunner
from app.service import EstimateService
from app.settings import Settings


@dataclass(frozen=True)
class AppState:
    """What one app instance owns."""

    settings: Settings
    hub: HubClient
    service: EstimateService
    runner: JobRunner


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tuneplan
    return state


def get_settings(request: Request) -> Settings:
    return get_state(request).settings


def get_hub(request: Request) -> HubClient:
    return get_state(request).hub


def get_service(request: Request) -> EstimateService:
    return get_state(request).service


def get_runner(request: Request) -> JobRunner:
    return get_state(request).runner


def get_hub_token(
    request: Request,
    x_hf_token: Annotated[
        str | None,
        Header(
            alias="X-HF-Token",
            max_length=1024,
            description="Hugging Face token for gated/private repos (or send 'Authorization: Bearer hf_...'). "
            "Used for this request only; never logged or stored.",
        ),
    ] = None,
) -> str | None:
    """The caller's Hub token: ``X-HF-Token``, else ``Authorization: Bearer``; None without one."""
    token = clean_token(x_hf_token)
    if token is None:
        auth = request.headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            token = clean_token(auth)
    return token


SettingsDep = Annotated[Settings, Depends(get_settings)]
HubDep = Annotated[HubClient, Depends(get_hub)]
ServiceDep = Annotated[EstimateService, Depends(get_service)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
HubTokenDep = Annotated[str | None, Depends(get_hub_token)]
