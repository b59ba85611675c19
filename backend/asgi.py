"""ASGI entry point for uvicorn workers: ``uvicorn backend.asgi:app``.

After the app is built, everything alive (imported modules: SQLAlchemy, pydantic,
pandas, toloka-kit, ...: some 300,000 objects) is moved out of the cyclic garbage
collector's reach with `gc.freeze`. A full collection would otherwise walk them all
(~200 ms on a 2-core machine). Full collections are rare, but each one would pause the
request that happens to be running.
"""

import gc

from backend.app import create_app

app = create_app()

gc.collect()
gc.freeze()
