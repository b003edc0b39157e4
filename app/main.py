"""The app factory: ``create_app(settings)``.

Everything the app needs is embedded (catalog, GPU table, templates, static files), so ``tuneplan serve`` works with
no configuration. Startup stays light: nothing here imports torch (or anything of the training stack).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from app import VERSION
from app.deps import AppState
from app.handlers import install_error_handlers
from app.hub import HubClient
from app.jobs.runner import JobRunner
from app.middleware import BODY_SLACK_BYTES, BodyLimit, ImmutableStaticFiles
from app.routes import ROUTERS
from app.service import EstimateService, price_table
from app.settings import Settings

DESCRIPTION = """\
Plan the disk and GPU memory of a full, LoRA or QLoRA fine-tune of a Hugging Face causal LM.

* `POST /api/estimate` (or `GET` with query parameters): a plan → the estimate (docs/schema.md).
* `GET /api/models?q=`: search the catalog; `GET /api/models/{id}`: resolve any model id (catalog, or the
  Hugging Face Hub: config.json plus safetensors headers, no weights).
* `GET /api/gpus`: the GPU catalog.
* `POST /api/jobs`: verify a plan with a real run (queued, run as its own process); `GET /api/jobs/{id}`: its
  status, result and measured-vs-estimated rows; `DELETE /api/jobs/{id}`: cancel it.

Gated or private Hub repos need a token: send `X-HF-Token: hf_...` or `Authorization: Bearer hf_...` (used for
that request only, never logged or stored), or start the server with `HF_TOKEN` set.

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
        hub, settings.max_config_bytes, price_table(settings.prices), calibrations=runner.latest_calibration
    )
    state = AppState(settings, hub, service, runner)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.runner.start()
        try:
            yield
        finally:
            state.runner.stop()
            hub.close()

    app = FastAPI(title="tuneplan", version=VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.tuneplan = state
    for router in ROUTERS:
        app.include_router(router)
    # plotly.min.js (4.6 MB) from the installed package, gzipped for clients that accept it, revalidated by ETag
    vendor = ImmutableStaticFiles(directory=plotly_dir())
    app.mount("/static/vendor", GZipMiddleware(vendor, compresslevel=6), name="vendor")
    if settings.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_config_bytes + BODY_SLACK_BYTES)
    return app
