"""POST /predict: nested-list JSON in, cosines out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.dataplane import DEFAULT_MODEL
from service.deps import DataPlaneDep
from service.schemas import PredictResponse, error_responses
from service.tensors import encode_predict, nested_to_array, parse_predict

router = APIRouter(tags=["inference"])

# The body is parsed with orjson + numpy rather than pydantic (per-element validation of a
# 32 000-number tensor costs far more than the model); this schema documents it for OpenAPI.
PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "additionalProperties": False,
                "properties": {
                    "inputs": {
                        "description": "sine values shaped (seq, batch, 1), time-major",
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "number"}},
                        },
                    },
                    "model": {"type": "string", "default": DEFAULT_MODEL},
                    "version": {"type": "integer", "minimum": 1},
                },
            },
            "example": {"inputs": [[[0.0]], [[0.0998]], [[0.1987]], [[0.2955]]], "model": "lstm"},
        }
    },
}


@router.post(
    "/predict",
    openapi_extra={"requestBody": PREDICT_BODY},
    response_model=PredictResponse,
    responses={
        200: {"description": "the predicted cosines, shaped like the inputs"},
        **error_responses(400, 404, 409),
    },
)
async def predict(request: Request, dataplane: DataPlaneDep) -> Response:
    """Predict cos for sine sequences shaped (seq, batch, 1)."""
    body = await request.body()  # BodyLimitMiddleware bounds it
    parsed = parse_predict(body, default_model=DEFAULT_MODEL)
    served = await dataplane.model_for(parsed.model, parsed.version)
    inputs = nested_to_array(
        parsed.inputs, label="'inputs'", features=served.input_size, max_elements=dataplane.max_elements
    )
    outputs = await dataplane.infer(served, inputs)
    # orjson straight from the array; PredictResponse only documents this body (validating it would cost more)
    return Response(encode_predict(outputs, served.name, served.version), media_type="application/json")
