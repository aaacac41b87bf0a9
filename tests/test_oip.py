"""The Open Inference Protocol codec: JSON and binary round trips, one error per malformed request, client compat."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from service import oip
from service.errors import InvalidInputError, PayloadTooLargeError

MAX_ELEMENTS = 10_000
SHAPE = [2, 3, 1]
ONES = np.ones(SHAPE, dtype=np.float32).tobytes()


def make_input(data: object = None, **fields: Any) -> dict[str, Any]:
    """An input tensor object of SHAPE and FP32 holding `data` (six numbers by default); fields override."""
    spec: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": SHAPE}
    spec["data"] = [0.5, -0.25, 1.0, 0.0, 2.0, 3.5] if data is None else data
    spec.update(fields)
    return spec


def json_body(*inputs: dict[str, Any], **request: Any) -> bytes:
    """A JSON request body; one default input when none is given."""
    return orjson.dumps({"inputs": list(inputs) or [make_input()], **request})


def binary_body(
    raw: bytes, *, datatype: str = "FP32", shape: list[int] | None = None, size: int | None = None, **request: Any
) -> tuple[bytes, int]:
    """A binary-extension body (JSON header + raw) and its header length; `size` defaults to len(raw)."""
    spec = {
        "name": "input",
        "datatype": datatype,
        "shape": SHAPE if shape is None else shape,
        "parameters": {"binary_data_size": len(raw) if size is None else size},
    }
    header = orjson.dumps({"inputs": [spec], **request})
    return header + raw, len(header)


def decode(body: bytes, header_length: int | None = None) -> oip.InferRequest:
    return oip.decode_infer_request(body, header_length, input_size=1, max_elements=MAX_ELEMENTS)


def sample(dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
    return np.arange(6, dtype=dtype).reshape(SHAPE) / 4 - 0.5


def assert_float32_tensor(tensor: npt.NDArray[np.float32], expected: npt.NDArray[Any]) -> None:
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous and tensor.flags.writeable and tensor.flags.aligned
    assert tensor.shape == expected.shape
    np.testing.assert_array_equal(tensor, expected.astype(np.float32))


# --- decoding valid requests ---


def test_decode_json_flat_data_round_trips_values_and_shape() -> None:
    expected = sample()
    request = decode(json_body(make_input(expected.ravel().tolist()), id="req-1"))
    assert_float32_tensor(request.tensor, expected)
    assert request.id == "req-1"
    assert request.input_name == "input"
    assert request.output_binary is False
    assert request.output_names == ()


def test_decode_json_nested_data_round_trips_values_and_shape() -> None:
    expected = sample()
    request = decode(json_body(make_input(expected.tolist())))
    assert_float32_tensor(request.tensor, expected)


def test_decode_json_keeps_any_input_name_and_accepts_integers_and_fp64() -> None:
    request = decode(json_body(make_input([1, 2, 3, -4, 0, 1], name="x", datatype="FP64")))
    assert request.input_name == "x"
    assert_float32_tensor(request.tensor, np.array([1, 2, 3, -4, 0, 1]).reshape(SHAPE))


@pytest.mark.parametrize("values", [[0.0, 1.0] * 3, [0, 1, 0, 1, 0, 1], [0.0, 0.5, 0.25, 0.125, 0.75, 1]])
def test_decode_accepts_numbers_equal_to_zero_or_one(values: list[float]) -> None:
    # These are the values booleans would have become; they must not be mistaken for booleans.
    request = decode(json_body(make_input(values)))
    np.testing.assert_array_equal(request.tensor.ravel(), np.array(values, dtype=np.float32))


def test_decode_accepts_a_large_flat_request_with_many_zeros() -> None:
    values = [0.0] * 100 + [0.5] * 900
    body = json_body(make_input(values, shape=[10, 100, 1]))
    np.testing.assert_array_equal(decode(body).tensor.ravel(), np.array(values, dtype=np.float32))


def test_decode_binary_fp32_round_trips_values() -> None:
    expected = sample()
    body, header_length = binary_body(expected.tobytes(), id="b", parameters={"binary_data_output": True})
    request = decode(body, header_length)
    assert_float32_tensor(request.tensor, expected)
    assert request.id == "b"
    assert request.output_binary is True


def test_decode_binary_fp64_converts_to_float32() -> None:
    expected = sample(np.float64)
    body, header_length = binary_body(expected.astype("<f8").tobytes(), datatype="FP64")
    assert_float32_tensor(decode(body, header_length).tensor, expected)


def test_decode_binary_after_a_header_of_odd_length_gives_an_aligned_writable_tensor() -> None:
    expected = sample()
    body, header_length = binary_body(expected.tobytes(), id="odd")
    if header_length % 4 == 0:
        body, header_length = binary_body(expected.tobytes(), id="odd!")
    assert header_length % 4 != 0
    assert_float32_tensor(decode(body, header_length).tensor, expected)


def test_decode_treats_null_data_and_null_parameters_as_absent() -> None:
    # kserve's InferInput.to_dict() writes "data": null next to binary_data_size, and unset parameters as null
    spec = {**make_input(), "data": None, "parameters": {"binary_data_size": len(ONES)}}
    header = orjson.dumps({"inputs": [spec], "parameters": None, "outputs": [{"name": "output", "parameters": None}]})
    request = decode(header + ONES, len(header))
    assert_float32_tensor(request.tensor, np.ones(SHAPE))
    assert (request.output_binary, request.output_names) == (False, ("output",))


def test_decode_accepts_header_length_equal_to_a_json_only_body() -> None:
    body = json_body()
    assert decode(body, len(body)).tensor.shape == tuple(SHAPE)


def test_decode_ignores_unknown_top_level_keys_and_parameters() -> None:
    body = json_body(make_input(parameters={"custom": 1}), parameters={"priority": 3}, extra={"a": [1, 2]})
    assert decode(body).tensor.shape == tuple(SHAPE)


@pytest.mark.parametrize(
    ("request_fields", "binary", "names"),
    [
        ({}, False, ()),
        ({"outputs": []}, False, ()),
        ({"parameters": {"binary_data_output": True}}, True, ()),
        ({"outputs": [{"name": "output"}]}, False, ("output",)),
        ({"outputs": [{"name": "output", "parameters": {"binary_data": True}}]}, True, ("output",)),
        (
            {"parameters": {"binary_data_output": True}, "outputs": [{"name": "output"}]},
            True,
            ("output",),
        ),
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "output", "parameters": {"binary_data": False}}],
            },
            False,
            ("output",),
        ),
    ],
    ids=[
        "nothing-asked-is-json",
        "empty-outputs-is-json",
        "request-level-binary",
        "named-output-json",
        "per-output-binary",
        "request-level-applies-to-named-output",
        "per-output-false-overrides-request-level",
    ],
)
def test_decode_reads_which_outputs_and_whether_binary(
    request_fields: dict[str, Any], binary: bool, names: tuple[str, ...]
) -> None:
    request = decode(json_body(**request_fields))
    assert request.output_binary is binary
    assert request.output_names == names


# --- decoding malformed requests: each raises the right error with a message that says what was wrong ---


def bad(
    case_id: str,
    body: bytes | tuple[bytes, int],
    error: type[Exception],
    fragment: str,
    header_length: int | None = None,
) -> Any:
    if isinstance(body, tuple):
        body, header_length = body
    return pytest.param(body, header_length, error, fragment, id=case_id)


def with_header_length(body: tuple[bytes, int], header_length: int) -> tuple[bytes, int]:
    return body[0], header_length


BAD_REQUESTS = [
    # the body
    bad("not-json", b"{not json", InvalidInputError, "request body is not valid JSON"),
    bad("not-utf8", b'{"inputs": "\xff"}', InvalidInputError, "not valid JSON"),
    bad("nan-literal", json_body().replace(b"0.5", b"NaN"), InvalidInputError, "not valid JSON"),
    bad("1e999-is-infinite", json_body().replace(b"0.5", b"1e999"), InvalidInputError, "infinity"),
    bad("not-an-object", b"[1, 2]", InvalidInputError, "request body is a list but a JSON object was expected"),
    bad("id-not-a-string", json_body(id=7), InvalidInputError, "'id' is a number (7) but a string was expected"),
    bad("parameters-not-an-object", json_body(parameters=[1]), InvalidInputError, "'parameters' is a list"),
    # the inputs
    bad("no-inputs", b"{}", InvalidInputError, "'inputs' is missing or null but a non-empty list"),
    bad("empty-inputs", b'{"inputs": []}', InvalidInputError, "is an empty list but a non-empty list"),
    bad("inputs-not-a-list", b'{"inputs": {"name": "input"}}', InvalidInputError, "non-empty list"),
    bad(
        "two-inputs", json_body(make_input(), make_input()), InvalidInputError, "2 inputs but the model takes exactly 1"
    ),
    bad("input-not-an-object", b'{"inputs": [3]}', InvalidInputError, "input is a number (3) but a JSON object"),
    bad("no-name", json_body(make_input(name=None)), InvalidInputError, "'name' is missing or null but a string"),
    bad(
        "datatype-int32",
        json_body(make_input(datatype="INT32")),
        InvalidInputError,
        "datatype is 'INT32' but FP32 or FP64 was expected",
    ),
    bad(
        "datatype-bytes",
        json_body(make_input(datatype="BYTES")),
        InvalidInputError,
        "datatype is 'BYTES' but FP32 or FP64",
    ),
    bad(
        "datatype-missing",
        json_body(make_input(datatype=None)),
        InvalidInputError,
        "datatype is missing or null but FP32 or FP64",
    ),
    # the shape
    bad("shape-2d", json_body(make_input(shape=[6, 1])), InvalidInputError, "[6, 1] but 3 dimensions (seq, batch, 1)"),
    bad("shape-4d", json_body(make_input(shape=[1, 2, 3, 1])), InvalidInputError, "but 3 dimensions"),
    bad("shape-not-a-list", json_body(make_input(shape=6)), InvalidInputError, "shape is 6 but a list of 3 dimensions"),
    bad("shape-float", json_body(make_input(shape=[2.0, 3, 1])), InvalidInputError, "integer dimensions"),
    bad("shape-bool", json_body(make_input(shape=[True, 6, 1])), InvalidInputError, "integer dimensions"),
    bad(
        "shape-zero", json_body(make_input([], shape=[0, 3, 1])), InvalidInputError, "every dimension must be positive"
    ),
    bad("shape-negative", json_body(make_input(shape=[-2, -3, 1])), InvalidInputError, "must be positive"),
    bad("last-dim-not-input-size", json_body(make_input(shape=[1, 2, 3])), InvalidInputError, "input size 1"),
    # JSON data
    bad("no-data", json_body({**make_input(), "data": None}), InvalidInputError, "neither 'data' nor"),
    bad("data-not-a-list", json_body(make_input(1.5)), InvalidInputError, "'data' is a number (1.5) but a list"),
    bad("flat-too-short", json_body(make_input([0.5] * 5)), InvalidInputError, "has 5 elements but 6 numbers"),
    bad("flat-too-long", json_body(make_input([0.5] * 7)), InvalidInputError, "has 7 elements but 6 numbers"),
    bad("nested-wrong-count", json_body(make_input([[[0.5]] * 3] * 3)), InvalidInputError, "ragged or not nested"),
    bad("nested-ragged", json_body(make_input([[[0.5]] * 3, [[0.5]] * 2])), InvalidInputError, "ragged"),
    bad("nested-number-for-list", json_body(make_input([[[0.5]] * 3, [0.5] * 3])), InvalidInputError, "ragged"),
    bad("nested-too-deep", json_body(make_input([[[[0.5]]] * 3] * 2)), InvalidInputError, "ragged"),
    bad("flat-with-a-list", json_body(make_input([0.5] * 5 + [[0.5]])), InvalidInputError, "ragged"),
    bad("nested-partly", json_body(make_input([[0.5, 0.5, 0.5]] * 2)), InvalidInputError, "ragged"),
    bad(
        "strings",
        json_body(make_input(["1.5"] * 6)),
        InvalidInputError,
        "a string ('1.5') at flat index 0 but only numbers were expected",
    ),
    bad("string-among-numbers", json_body(make_input([0.5] * 5 + ["2"])), InvalidInputError, "a string ('2')"),
    bad("booleans", json_body(make_input([True] * 6)), InvalidInputError, "a boolean (true) at flat index 0"),
    bad(
        "boolean-among-floats", json_body(make_input([0.5] * 5 + [False])), InvalidInputError, "(false) at flat index 5"
    ),
    bad(
        "boolean-among-ints", json_body(make_input([2, 3, True, 4, 5, 6])), InvalidInputError, "(true) at flat index 2"
    ),
    bad("boolean-nested", json_body(make_input([[[0.5]] * 3, [[0.5], [True], [0.5]]])), InvalidInputError, "index 4"),
    bad(
        "boolean-among-many-zeros",
        json_body(make_input([0.0] * 999 + [True], shape=[10, 100, 1])),
        InvalidInputError,
        "a boolean (true) at flat index 999",
    ),
    bad("null", json_body(make_input([0.5, None, 0.5, 0.5, 0.5, 0.5])), InvalidInputError, "null at flat index 1"),
    bad("object", json_body(make_input([0.5] * 5 + [{"a": 1}])), InvalidInputError, "an object at flat index 5"),
    bad("object-for-row", json_body(make_input([[[0.5]] * 3, [[0.5], [0.5], {"a": 1}]])), InvalidInputError, "object"),
    bad("beyond-float32", json_body(make_input([0.5] * 5 + [1e39])), InvalidInputError, "beyond float32 range"),
    # requested outputs
    bad("outputs-not-a-list", json_body(outputs={"name": "output"}), InvalidInputError, "'outputs' is an object"),
    bad("output-unknown", json_body(outputs=[{"name": "y"}]), InvalidInputError, "'y' does not exist"),
    bad("output-name-a-number", json_body(outputs=[{"name": 5}]), InvalidInputError, "output 5 does not exist"),
    bad("output-not-an-object", json_body(outputs=[3]), InvalidInputError, "output is a number (3) but a JSON object"),
    bad(
        "output-parameters-not-an-object",
        json_body(outputs=[{"name": "output", "parameters": [1]}]),
        InvalidInputError,
        "output 'output' 'parameters' is a list but a JSON object",
    ),
    bad(
        "input-parameters-not-an-object",
        json_body(make_input(parameters="size")),
        InvalidInputError,
        "input 'input' 'parameters' is a string ('size') but a JSON object",
    ),
    bad(
        "name-too-long",
        json_body(make_input(name="x" * 300)),
        InvalidInputError,
        "input 'name' has 300 characters but at most 256",
    ),
    bad("name-a-number", json_body(make_input(name=5)), InvalidInputError, "'name' is a number (5) but a string"),
    bad("shape-of-strings", json_body(make_input(shape=["6", 1, 1])), InvalidInputError, "integer dimensions"),
    bad("output-twice", json_body(outputs=[{"name": "output"}] * 2), InvalidInputError, "requested twice"),
    bad(
        "output-binary-not-bool",
        json_body(outputs=[{"name": "output", "parameters": {"binary_data": "yes"}}]),
        InvalidInputError,
        "'binary_data' is a string ('yes') but a boolean",
    ),
    bad(
        "binary-output-not-bool",
        json_body(parameters={"binary_data_output": 1}),
        InvalidInputError,
        "'binary_data_output' is a number (1) but a boolean",
    ),
    bad(
        "output-classification",
        json_body(outputs=[{"name": "output", "parameters": {"classification": 2}}]),
        InvalidInputError,
        "'classification', which this server does not support",
    ),
    bad(
        "input-shared-memory",
        json_body(make_input(parameters={"shared_memory_region": "r"})),
        InvalidInputError,
        "'shared_memory_region', which this server does not support",
    ),
    # binary data
    bad(
        "header-length-larger-than-body",
        with_header_length(binary_body(ONES), 10_000),
        InvalidInputError,
        "Inference-Header-Content-Length is 10000 but the body has only",
    ),
    bad("header-length-negative", with_header_length(binary_body(ONES), -1), InvalidInputError, "is -1 but a non-neg"),
    bad(
        "binary-size-less-than-remaining-bytes",
        binary_body(ONES + b"\0\0\0\0", size=len(ONES)),
        InvalidInputError,
        "the body has 28 bytes after the",
    ),
    bad(
        "binary-size-not-shape-times-itemsize",
        binary_body(ONES + b"\0\0\0\0"),
        InvalidInputError,
        "binary_data_size 28 but shape [2, 3, 1] of FP32 needs 24 bytes",
    ),
    bad(
        "binary-fp64-size-of-fp32",
        binary_body(ONES, datatype="FP64"),
        InvalidInputError,
        "binary_data_size 24 but shape [2, 3, 1] of FP64 needs 48 bytes",
    ),
    bad(
        "binary-truncated",
        binary_body(ONES[:-3], size=len(ONES)),
        InvalidInputError,
        "has 21 bytes after the",
    ),
    bad(
        "binary-without-header-length",
        binary_body(ONES)[0],
        InvalidInputError,
        "not valid JSON",  # the binary tail makes the whole body invalid JSON
    ),
    bad(
        "binary-size-without-header-length",
        binary_body(b"")[0],
        InvalidInputError,
        "declares parameters.binary_data_size but the request has no Inference-Header-Content-Length",
    ),
    bad(
        "binary-size-and-data",
        json_body(make_input(parameters={"binary_data_size": 24})),
        InvalidInputError,
        "both 'data' and parameters.binary_data_size",
    ),
    bad(
        "binary-bytes-for-a-json-input",
        (json_body() + ONES, len(json_body())),
        InvalidInputError,
        "24 bytes after the",
    ),
    bad("binary-size-negative", binary_body(ONES, size=-24), InvalidInputError, "binary_data_size -24 but a non-neg"),
    bad("binary-nan", binary_body(np.full(SHAPE, np.nan, "<f4").tobytes()), InvalidInputError, "NaN, infinite"),
    bad(
        "binary-fp64-beyond-float32",
        binary_body(np.full(SHAPE, 1e300, "<f8").tobytes(), datatype="FP64"),
        InvalidInputError,
        "beyond float32 range at flat index 0",
    ),
    # sizes
    bad(
        "one-element-over-the-limit",
        json_body(make_input([0.5], shape=[MAX_ELEMENTS + 1, 1, 1])),
        PayloadTooLargeError,
        f"= {MAX_ELEMENTS + 1} elements but at most {MAX_ELEMENTS} are accepted",
    ),
]


@pytest.mark.parametrize(("body", "header_length", "error", "fragment"), BAD_REQUESTS)
def test_decode_rejects_malformed_request_with_a_message_saying_what_was_expected(
    body: bytes, header_length: int | None, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as raised:
        decode(body, header_length)
    assert type(raised.value) is error
    assert fragment in str(raised.value)


def test_decode_rejects_a_binary_data_size_that_is_not_an_integer() -> None:
    body, header_length = binary_body(ONES)
    body = body.replace(b'"binary_data_size":24', b'"binary_data_size":"24"')
    header_length += 2
    with pytest.raises(InvalidInputError, match="binary_data_size '24' but a non-negative byte count"):
        decode(body, header_length)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_decode_rejects_absurd_shape_as_too_large_without_allocating(binary: bool) -> None:
    shape = [10**9, 10**9, 1]
    if binary:
        body, header_length = binary_body(ONES, shape=shape, size=4 * 10**18)
    else:
        body, header_length = json_body(make_input([0.5], shape=shape)), None
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadTooLargeError, match=r"= 1000000000000000000 elements but at most 10000"):
            decode(body, header_length)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1_000_000


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("0", 0), ("123", 123), (" 42 ", 42), ("-5", -5)], ids=repr
)
def test_parse_header_length_reads_an_integer_or_none(value: str | None, expected: int | None) -> None:
    assert oip.parse_header_length(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "1.5", "1_000", "0x10", "9" * 5000], ids=lambda value: value[:8])
def test_parse_header_length_rejects_a_non_integer(value: str) -> None:
    with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length is .* but a byte count"):
        oip.parse_header_length(value)


# --- encoding responses ---


def test_encode_json_response_parses_back_to_the_output() -> None:
    output = sample()
    body, headers = oip.encode_infer_response(
        model_name="lstm", model_version="3", request_id="req-1", output=output, binary=False
    )
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "lstm",
        "model_version": "3",
        "id": "req-1",
        "outputs": [{"name": "output", "datatype": "FP32", "shape": SHAPE, "data": output.ravel().tolist()}],
    }


def test_encode_binary_response_has_header_then_little_endian_float32_bytes() -> None:
    output = sample()
    body, headers = oip.encode_infer_response(
        model_name="lstm", model_version="3", request_id=None, output=output, binary=True
    )
    assert headers["Content-Type"] == "application/octet-stream"
    header_length = int(headers["Inference-Header-Content-Length"])
    assert orjson.loads(body[:header_length]) == {
        "model_name": "lstm",
        "model_version": "3",
        "outputs": [{"name": "output", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": 24}}],
    }
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], dtype="<f4").reshape(SHAPE), output)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_encode_converts_float64_and_non_contiguous_outputs_to_float32(binary: bool) -> None:
    output = np.arange(12, dtype=np.float64).reshape(2, 6, 1)[:, ::2]  # a strided view of shape (2, 3, 1)
    body, headers = oip.encode_infer_response(
        model_name="m", model_version="1", request_id=None, output=output, binary=binary
    )
    if binary:
        header_length = int(headers["Inference-Header-Content-Length"])
        meta = orjson.loads(body[:header_length])["outputs"][0]
        values = np.frombuffer(body[header_length:], dtype="<f4")
    else:
        meta = orjson.loads(body)["outputs"][0]
        values = np.array(meta["data"], dtype=np.float32)
    assert meta["shape"] == [2, 3, 1] and meta["datatype"] == "FP32"
    np.testing.assert_array_equal(values.reshape(2, 3, 1), output)


def test_encode_then_decode_round_trips_through_binary() -> None:
    output = sample()
    body, headers = oip.encode_infer_response(
        model_name="m", model_version="1", request_id=None, output=output, binary=True
    )
    # a response's output is shaped like a request's input, so the decoder can read it back after renaming
    renamed = body.replace(b'"outputs"', b'"inputs" ')
    assert_float32_tensor(decode(renamed, int(headers["Inference-Header-Content-Length"])).tensor, output)


def test_encode_error_is_a_json_object_with_the_message() -> None:
    assert orjson.loads(oip.encode_error("input 'x' is wrong")) == {"error": "input 'x' is wrong"}


# --- compatibility with a standard client ---


def test_tritonclient_binary_request_decodes_and_binary_response_parses() -> None:
    http = pytest.importorskip("tritonclient.http")
    expected = np.sin(np.linspace(0, 3, 7 * 4)).astype(np.float32).reshape(7, 4, 1)
    infer_input = http.InferInput("input", list(expected.shape), "FP32")
    infer_input.set_data_from_numpy(expected, binary_data=True)
    outputs = [http.InferRequestedOutput("output", binary_data=True)]
    body, header_length = http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs, request_id="tc-1"
    )
    assert header_length is not None

    request = oip.decode_infer_request(body, header_length, input_size=1, max_elements=MAX_ELEMENTS)
    assert_float32_tensor(request.tensor, expected)
    assert (request.id, request.output_binary, request.output_names) == ("tc-1", True, ("output",))

    response, headers = oip.encode_infer_response(
        model_name="lstm", model_version="1", request_id=request.id, output=np.cos(request.tensor), binary=True
    )
    result = http.InferenceServerClient.parse_response_body(
        response, header_length=int(headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(result.as_numpy("output"), np.cos(expected))
    assert result.get_response()["id"] == "tc-1"


def test_tritonclient_json_fp64_request_without_outputs_asks_for_binary_and_json_response_parses() -> None:
    http = pytest.importorskip("tritonclient.http")
    expected = np.linspace(-1, 1, 5 * 2, dtype=np.float64).reshape(5, 2, 1)
    infer_input = http.InferInput("input", list(expected.shape), "FP64")
    infer_input.set_data_from_numpy(expected, binary_data=False)
    body, header_length = http.InferenceServerClient.generate_request_body([infer_input])
    assert header_length is None

    request = oip.decode_infer_request(body, header_length, input_size=1, max_elements=MAX_ELEMENTS)
    assert_float32_tensor(request.tensor, expected)
    # with no outputs named, the client sets the request-level binary_data_output
    assert (request.id, request.output_binary, request.output_names) == (None, True, ())

    response, _ = oip.encode_infer_response(
        model_name="lstm", model_version="1", request_id=None, output=request.tensor, binary=False
    )
    result = http.InferenceServerClient.parse_response_body(response)
    np.testing.assert_array_equal(result.as_numpy("output"), expected.astype(np.float32))
