"""The app's HTTP routes, gathered in one place: the REST API, rent / prices / configs, the verify jobs, the page."""

from fastapi import APIRouter

from app.routes import api, jobs, pages, plans

ROUTERS: tuple[APIRouter, ...] = (api.router, plans.router, jobs.router, pages.router)

__all__ = ["ROUTERS"]
