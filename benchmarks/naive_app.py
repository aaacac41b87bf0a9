"""The naive baseline of benchmarks/serving.py: /predict written the way a FastAPI tutorial would write it.

A pydantic model validates the nested lists element by element, torch.tensor() builds the input,
the forward runs under torch.no_grad() in the endpoint, and the answer is a dict serialised by
FastAPI's default JSON encoder. It loads the same TorchScript file that lstm-serve serves:

    NAIVE_MODEL_PATH=model-store/lstm/versions/1/model.pt \\
        .venv/bin/python -m uvicorn benchmarks.naive_app:app --host 127.0.0.1 --port 8001 --workers 1

Deliberately unoptimised; nothing in the service imports it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel

warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)

model = torch.jit.load(os.environ["NAIVE_MODEL_PATH"])  # type: ignore[no-untyped-call]
model.eval()

app = FastAPI(title="naive lstm")


class PredictRequest(BaseModel):
    inputs: list[list[list[float]]]


# response_model=None: no response validation; FastAPI's default jsonable_encoder + json.dumps, as for an
# endpoint without a return annotation.
@app.post("/predict", response_model=None)
def predict(request: PredictRequest) -> dict[str, Any]:
    x = torch.tensor(request.inputs)
    with torch.no_grad():
        y = model(x)
    return {"outputs": y.tolist()}
