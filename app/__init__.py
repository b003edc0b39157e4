"""tuneplan's web app, REST API and CLI (``create_app`` in ``app.main``, the ``tuneplan`` command in ``app.cli``).

Layout, one room per job: ``routes/`` (thin HTTP routes), ``deps.py`` (typed dependencies), ``service.py`` (plan →
config → estimate contract), ``schemas.py`` (request models derived from ``estimator.Plan``), ``hub/`` (the Hub
client and its cache), ``jobs/`` (the verify-job store and runner), ``view/`` (the page's form, view model and
charts), ``errors.py`` / ``handlers.py`` (typed errors and the one handler), ``cli.py``, ``main.py`` (the factory).
"""

from importlib import metadata

try:
    VERSION = metadata.version("tuneplan")
except metadata.PackageNotFoundError:  # run from a checkout without an install
    VERSION = "0.1.0"

__all__ = ["VERSION"]
