"""The OpenAPI document says what every operation answers: a schema for each success body, the error body else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service import Settings, create_app

SPEC = create_app(Settings(store_dir=Path("unused"))).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
]


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_answer_of_an_operation_is_declared_with_a_schema(method: str, path: str, operation: Any) -> None:
    for status, response in operation["responses"].items():
        if status == "204":
            assert "content" not in response, (method, path)
            continue
        content = response.get("content", {})
        assert content and all("schema" in media for media in content.values()), (method, path, status)
        if int(status) >= 400:
            body = "NotReady" if (path, status) == ("/readyz", "503") else "ErrorBody"  # NotReady has `error` too
            assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}, (path, status)


def test_management_operations_declare_the_bearer_scheme_and_its_refusals() -> None:
    assert SPEC["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "LSTM_API_TOKEN; while it is unset, management routes are open to loopback clients only",
    }
    managed = [
        (method, path, op)
        for method, path, op in OPERATIONS
        if method in ("POST", "PUT", "DELETE") and path.startswith(("/models", "/train"))
    ]
    assert len(managed) == 6  # import a version, set and remove an alias, delete a version, submit and cancel a job
    for method, path, operation in managed:
        assert operation["security"] == [{"token": []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
