"""ASGI entry point for uvicorn workers: ``uvicorn backend.asgi:app``.

It refuses to load (exit status 1, one sentence) without a sound secret key: see
``backend.web.security.require_secret_key``.

After the app is built, everything alive (imported modules: SQLAlchemy, pydantic,
pandas, toloka-kit, ...: some 300,000 objects) is moved out of the cyclic garbage
collector's reach with `gc.freeze`. A full collection would otherwise walk them all
(~200 ms on a 2-core machine). Full collections are rare, but each one would pause the
request that happens to be running.
"""

import gc

from backend.app import create_app
from backend.jobs.inline import start_if_enabled
from backend.settings import get_settings
from backend.web.security import InsecureSecretKey, require_secret_key

try:  # never serve with a missing, short or published secret key
    require_secret_key(get_settings())
except InsecureSecretKey as exc:
    raise SystemExit(f"error: {exc.message}") from None

app = create_app()
start_if_enabled()  # SQLite under `quorum serve`: the in-process worker thread

gc.collect()
gc.freeze()
