"""The app factory: ``create_app(settings)``.

Everything the app needs is embedded (catalog, GPU table, templates, static files), so ``tuneplan serve`` works with
no configuration. Startup stays light: nothing here imports torch (or anything of the training stack).
"""

from __future__ import annotations

import gc
import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from app import VERSION
from app.deps import AppState
from app.handlers import install_error_handlers
from app.hub import HubClient
from app.jobs.launch import die_with_parent
from app.jobs.runner import JobRunner
from app.lanes import Lanes
from app.middleware import BODY_SLACK_BYTES, BodyLimit, ImmutableStaticFiles, SecurityHeaders, TrustedHosts
from app.routes import ROUTERS
from app.routes.pages import templates
from app.serve import SUPERVISOR_ENV
from app.service import EstimateService, price_table
from app.settings import Settings

DESCRIPTION = """\
Plan the disk and GPU memory of a full, LoRA or QLoRA fine-tune of a Hugging Face causal LM.

* `POST /api/estimate` (or `GET` with query parameters): a plan → the estimate (docs/schema.md).
* `GET /api/models?q=`: search the catalog; `GET /api/models/{id}`: resolve any model id (catalog, or the
  Hugging Face Hub: config.json plus safetensors headers, no weights).
* `GET /api/gpus`: the GPU catalog.
* `POST /api/jobs`: verify a plan with a real run (queued, run as its own process); `GET /api/jobs/{id}`: its
  status, result and measured-vs-estimated rows; `DELETE /api/jobs/{id}`: cancel it. The jobs API needs the
  server's API token (`Authorization: Bearer <TUNEPLAN_API_TOKEN>`) when it has one, else it answers loopback only.

Gated or private Hub repos need your Hugging Face token: send `X-HF-Token: hf_...` (used for that request only,
never logged or stored). A server's own `HF_TOKEN` serves only requests that carry its API token.

Every error is JSON `{"detail": "<what to fix>"}` with a 4xx status.
"""


def plotly_dir() -> Path:
    """``plotly/package_data`` of the installed plotly package: ``plotly.min.js`` is served from there."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:  # pragma: no cover - plotly is a base dependency
        raise RuntimeError("the plotly package is not installed")
    return Path(spec.origin).parent / "package_data"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. With no ``settings``, they are read from the environment (``TUNEPLAN_*``)."""
    settings = settings or Settings()
    hub = HubClient(settings)
    runner = JobRunner(settings)
    service = EstimateService(
        hub,
        settings.max_config_bytes,
        settings.estimate_cache_entries,
        prices=price_table(settings.prices),
        calibrations=runner.latest_calibration,
    )
    state = AppState(settings, hub, service, runner, Lanes())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if os.environ.get(SUPERVISOR_ENV) == str(os.getppid()):
            die_with_parent()  # a worker of `tuneplan serve --workers N`: it (and its runs) end with the server
        state.runner.start()
        gc.freeze()  # what start-up built (routes, models, catalog) is never garbage: keep it out of collections
        try:
            yield
        finally:
            state.runner.stop()
            hub.close()

    app = FastAPI(
        title="tuneplan", version=VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.tuneplan = state
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        """Swagger UI, from files this server serves (``static/swagger-ui``), started without inline script."""
        context = {"title": app.title, "openapi_url": app.openapi_url}
        return templates(settings.templates_dir).TemplateResponse(request, "docs.html", context)

    # plotly.min.js (4.6 MB) from the installed package, gzipped for clients that accept it, revalidated by ETag
    vendor = ImmutableStaticFiles(directory=plotly_dir())
    app.mount("/static/vendor", GZipMiddleware(vendor, compresslevel=6), name="vendor")
    if settings.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_config_bytes + BODY_SLACK_BYTES)
    app.add_middleware(TrustedHosts, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries them, refusals included
    return app
