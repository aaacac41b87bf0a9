"""Property-based fuzzing of every route in the app's own OpenAPI schema (schemathesis): no 5xx, documented shapes.

Requests go through the real app and lifespan (a TestClient from a loopback address, so the management
routes run rather than answer 403) over a store holding tiny models. The queue admits no job
(`job_queue_max=0`), so a valid POST /train is a 429 and nothing trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import model_store
from service import Settings, create_app
from tests.conftest import make_client, save_tiny

# Per operation and phase: 23 operations take ~25 s. 25 examples missed the unbounded ?offset= (a 500 from
# SQLite's integer overflow) that 100 find.
MAX_EXAMPLES = 100

schema = schemathesis.openapi.from_dict(create_app(Settings(store_dir=Path("unused"))).openapi())
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
schema.config.generation.update(modes=MODES, max_examples=MAX_EXAMPLES, deterministic=True, database="none")
schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = model_store.ModelStore(tmp_path_factory.mktemp("fuzz") / "store")
    for seed in (1, 2):
        save_tiny(store, seed=seed, extra_files={"report.png": b"\x89PNG\r\n\x1a\nfake"})
    save_tiny(store, name="other", seed=3)
    store.set_alias("lstm", model_store.PRODUCTION, 2)  # an aliased version the fuzzer cannot delete
    with make_client(store, job_queue_max=0) as client:
        yield client


def _send(client: TestClient, case: Case[Any]) -> httpx2.Response:
    """Send a case through the TestClient (httpx) from the kwargs schemathesis prepares for `requests`."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=str(client.base_url))
    body = kwargs.pop("data", None)
    if body is not None:
        assert isinstance(body, bytes | str), body  # the API takes JSON or raw bytes, no forms
        kwargs["content"] = body
    assert not kwargs.pop("cookies", None) and not kwargs.pop("files", None)  # the API has neither
    for unsupported in ("verify", "timeout", "allow_redirects", "stream"):
        kwargs.pop(unsupported, None)
    return client.request(**kwargs)


@schema.parametrize()
def test_fuzzed_requests_never_fail_the_server_and_match_the_schema(case: Case[Any], fuzz_client: TestClient) -> None:
    response = _send(fuzz_client, case)
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
    assert response.status_code != 403, "management routes must be open to a loopback client without a token"
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text[:500]
    case.validate_response(
        response, checks=[response_schema_conformance, content_type_conformance, status_code_conformance]
    )
