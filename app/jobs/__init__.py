"""Verify jobs: the SQLite job store (``store.py``) and the runner that runs each job as its own process
(``runner.py``). The routes are ``app.routes.jobs``."""
