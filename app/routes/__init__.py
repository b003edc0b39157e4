"""The app's HTTP routes, gathered in one place: the REST API, the verify jobs and the page."""

from fastapi import APIRouter

from app.routes import api, jobs, pages

ROUTERS: tuple[APIRouter, ...] = (api.router, jobs.router, pages.router)

__all__ = ["ROUTERS"]
