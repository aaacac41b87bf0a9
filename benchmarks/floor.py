"""The serving benchmark's in-process floor: what forward, decode and encode of each kind cost on one torch thread.

No server and no HTTP: the steps a request goes through, each timed alone (as timeit does), so each route's
measured latency can be read against the best any server could do with this model on this machine.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import torch

import model_store
from benchmarks.bodies import MODEL, Body, sines


def time_call(fn: Callable[[], object], repeats: int, target_s: float = 0.05, collect: bool = False) -> float:
    """Median over `repeats` batches of the mean µs per call; each batch runs about target_s.

    As timeit does, the cyclic garbage collector is off while timing (else a full collection lands on
    whichever step happens to run when it triggers); collect=True times with it on.
    """
    started = time.perf_counter()
    fn()
    once = time.perf_counter() - started
    number = max(1, int(target_s / max(once, 1e-7)))
    samples = []
    gc.collect()
    enabled = gc.isenabled()
    if not collect:
        gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - started) / number * 1e6)
    finally:
        if enabled:
            gc.enable()
    return statistics.median(samples)


def floor_steps(
    module: model_store.ScriptModule, by_kind: dict[str, Body], input_size: int
) -> dict[str, Callable[[], object]]:
    """The steps a request of each kind goes through, as zero-argument callables on this payload's bodies."""
    from fastapi.encoders import jsonable_encoder

    from benchmarks.naive_app import PredictRequest
    from service.oip import decode_infer_request, encode_infer_response
    from service.tensors import encode_predict, nested_to_array, parse_predict

    numpy_option = orjson.OPT_SERIALIZE_NUMPY
    predict, oip_json, binary = by_kind["predict"].data, by_kind["oip_json"].data, by_kind["oip_binary"].data
    header_length = by_kind["oip_binary"].header_length or 0
    x = sines(by_kind["predict"].payload).astype(np.float32)

    def forward() -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            y: npt.NDArray[np.float32] = module(torch.from_numpy(x)).numpy()
        return y

    y = forward()

    def service_predict_decode() -> object:
        parsed = parse_predict(predict, default_model=MODEL)
        return nested_to_array(parsed.inputs, label="inputs", features=input_size, max_elements=10**9)

    def naive_decode() -> object:  # FastAPI: await request.json() (json.loads), then the pydantic model
        return torch.tensor(PredictRequest.model_validate(json.loads(predict)).inputs)

    def naive_forward() -> object:
        with torch.no_grad():
            return module(torch.from_numpy(x))

    def naive_encode() -> object:  # FastAPI without a response model: jsonable_encoder, then JSONResponse
        content = jsonable_encoder({"outputs": torch.from_numpy(y).tolist()})
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def binary_encode() -> object:
        return orjson.dumps({"outputs": [{"parameters": {"binary_data_size": y.nbytes}}]}) + y.tobytes()

    return {
        FORWARD: forward,
        "/predict decode: orjson.loads": lambda: orjson.loads(predict),
        "/predict decode: orjson.loads + np.asarray(nested, float32)": lambda: np.asarray(
            orjson.loads(predict)["inputs"], dtype=np.float32
        ),
        PREDICT_DECODE: service_predict_decode,
        "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)": lambda: orjson.dumps({"outputs": y}, option=numpy_option),
        "/predict encode: service encode_predict": lambda: encode_predict(y, MODEL, 1),
        "OIP JSON decode: orjson.loads": lambda: orjson.loads(oip_json),
        "OIP JSON decode: service decode_infer_request": lambda: decode_infer_request(
            oip_json, None, input_size=input_size, max_elements=10**9
        ),
        "OIP JSON encode: orjson.dumps(OPT_SERIALIZE_NUMPY)": lambda: orjson.dumps(
            {"outputs": [{"data": y.reshape(-1)}]}, option=numpy_option
        ),
        "OIP JSON encode: service encode_infer_response": lambda: encode_infer_response(
            model_name=MODEL, model_version="1", request_id=None, output=y, binary=False
        ),
        "OIP binary decode: np.frombuffer": lambda: np.frombuffer(binary, dtype="<f4", offset=header_length),
        "OIP binary decode: service decode_infer_request": lambda: decode_infer_request(
            binary, header_length, input_size=input_size, max_elements=10**9
        ),
        "OIP binary encode: orjson header + tobytes": binary_encode,
        "OIP binary encode: service encode_infer_response": lambda: encode_infer_response(
            model_name=MODEL, model_version="1", request_id=None, output=y, binary=True
        ),
        NAIVE_DECODE: naive_decode,
        NAIVE_FORWARD: naive_forward,
        NAIVE_ENCODE: naive_encode,
    }


def floor(
    module: model_store.ScriptModule,
    model_path: Path,
    bodies: dict[str, dict[str, Body]],
    input_size: int,
    repeats: int,
) -> dict[str, dict[str, float]]:
    """µs per step (median), per payload: forward, decode and encode of each kind, on one torch thread."""
    os.environ["NAIVE_MODEL_PATH"] = str(model_path)  # naive_app loads it at import (its PredictRequest is used)
    results: dict[str, dict[str, float]] = {}
    for name, by_kind in bodies.items():
        steps = floor_steps(module, by_kind, input_size)
        results[name] = {step: time_call(fn, repeats) for step, fn in steps.items()}
        # The nested /predict body is the one that allocates a list per element: its cost with the GC on.
        results[name][PREDICT_DECODE_GC] = time_call(steps[PREDICT_DECODE], repeats, collect=True)
    return results


FORWARD = "forward (TorchScript, inference_mode)"
PREDICT_DECODE = "/predict decode: service (parse_predict + nested_to_array)"
PREDICT_DECODE_GC = "/predict decode: service, with the GC on"
NAIVE_DECODE = "naive decode: json.loads + pydantic + torch.tensor"
NAIVE_FORWARD = "naive forward (no_grad)"
NAIVE_ENCODE = "naive encode: tolist + jsonable_encoder + json.dumps"
# (decode, encode) steps summed with the forward: the floor of each route (the primitives alone) and what the
# service's own codec costs around the same forward.
FLOOR_SUMS = {
    "/predict floor (orjson)": ("/predict decode: orjson.loads", "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)"),
    "/predict floor with a tensor (orjson + np.asarray)": (
        "/predict decode: orjson.loads + np.asarray(nested, float32)",
        "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)",
    ),
    "/predict, service codec": (
        PREDICT_DECODE,
        "/predict encode: service encode_predict",
    ),
    "OIP JSON floor (orjson)": ("OIP JSON decode: orjson.loads", "OIP JSON encode: orjson.dumps(OPT_SERIALIZE_NUMPY)"),
    "OIP JSON, service codec": (
        "OIP JSON decode: service decode_infer_request",
        "OIP JSON encode: service encode_infer_response",
    ),
    "OIP binary floor": ("OIP binary decode: np.frombuffer", "OIP binary encode: orjson header + tobytes"),
    "OIP binary, service codec": (
        "OIP binary decode: service decode_infer_request",
        "OIP binary encode: service encode_infer_response",
    ),
    "naive": (NAIVE_DECODE, NAIVE_ENCODE),
}
