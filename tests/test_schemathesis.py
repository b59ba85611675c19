"""Schemathesis over the whole OpenAPI schema, as an admin and as a moderator.

Every operation gets valid (positive) and invalid (negative) requests generated from the
schema; each request is sent with an admin's and a moderator's token. The checks: no
server error (5xx), every status code is one the schema documents for the operation,
every response body and content type matches the schema. Bounded: a fixed number of
examples per operation, derandomized (the same requests on every run), no shrinking.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.app import create_app
from tests.conftest import auth, item_row

#: Examples per operation and generation mode (two requests each: admin, moderator).
EXAMPLES = int(os.environ.get("QUORUM_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


#: The app whose schema is tested; each test points it at the test database.
APP = create_app(database_url="sqlite://")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES)


@pytest.fixture
def tokens(settings, make_user, client, monkeypatch) -> Iterator[tuple[str, str]]:  # noqa: ANN001
    """An admin's and a moderator's tokens, over a database with a few items and a rule.
    Neighbour search uses the weightless encoder (no model to load)."""
    from backend.db import get_sessionmaker
    from backend.ml_adapter import service as ml_service
    from backend.ml_adapter.settings import get_ml_settings

    monkeypatch.setenv("QUORUM_ML_ENCODER", "hashing")
    monkeypatch.setenv("QUORUM_ML_INDEX_KIND", "exact")
    get_ml_settings.cache_clear()
    ml_service._stores.clear()

    _, admin = make_user("st-admin", "admin")
    _, moderator = make_user("st-mod", "moderator", kinds=["*"])
    resp = client.post("/api/v1/items", headers=auth(admin),
                       json=[item_row(i) for i in range(5)])
    assert resp.status_code == 200, resp.text
    resp = client.post("/api/v1/rules", headers=auth(admin), json={
        "name": "cheap", "expression": 'item.text.contains("x")', "action": "tag",
        "tag": "x"})
    assert resp.status_code == 201, resp.text
    APP.state.sessionmaker = get_sessionmaker(settings.resolved_database_url)
    yield admin, moderator
    get_ml_settings.cache_clear()
    ml_service._stores.clear()


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, tokens) -> None:  # noqa: ANN001
    for token in tokens:
        case.call_and_validate(headers=auth(token), checks=CHECKS)
