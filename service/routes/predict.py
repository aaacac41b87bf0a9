"""POST /predict: nested-list JSON in, cosines out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.deps import DataPlaneDep
from service.schemas import DEFAULT_MODEL, PredictRequest, PredictResponse, error_responses, inline_schema
from service.tensors import encode_predict, nested_to_array, parse_predict

router = APIRouter(tags=["inference"])

PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": inline_schema(PredictRequest)}},
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
