"""tuneplan's web app, REST API and CLI (``create_app`` in ``app.main``, the ``tuneplan`` command in ``app.cli``).

Layout, one room per job: ``routes/`` (thin HTTP routes), ``deps.py`` (typed dependencies), ``service.py`` (plan →
config → estimate contract), ``schemas.py`` (request models derived from ``estimator.Plan``), ``hub/`` (the Hub
client and its cache), ``jobs/`` (the verify-job store and runner), ``view/`` (the page's form, view model and
charts), ``errors.py`` / ``handlers.py`` (typed errors and the one handler), ``cli.py``, ``main.py`` (the factory).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``VERSION``, read from the installed package metadata on first use (the CLI's estimate never needs it, and
    ``importlib.metadata`` costs tens of milliseconds to import)."""
    if name != "VERSION":
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("tuneplan")
    except metadata.PackageNotFoundError:  # run from a checkout without an install
        version = "0.1.0"
    globals()["VERSION"] = version
    return version


__all__ = ["VERSION"]
