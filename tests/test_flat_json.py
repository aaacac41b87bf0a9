"""The /predict fast path (service.flat_json) against the general orjson path: same arrays, same errors."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ServiceError
from service.flat_json import split_predict_body
from service.tensors import nested_to_array, parse_predict


def decode(body: bytes, *, fast: bool, features: int = 1, max_elements: int = 10_000) -> tuple[Any, ...]:
    """What /predict makes of `body`: ("ok", array, model, version) or ("error", class name, message)."""
    patch = mock.patch("service.tensors.split_predict_body", return_value=None)
    try:
        if fast:
            parsed = parse_predict(body, default_model="lstm")
        else:
            with patch:
                parsed = parse_predict(body, default_model="lstm")
        array = nested_to_array(parsed.inputs, label="'inputs'", features=features, max_elements=max_elements)
    except ServiceError as error:
        return ("error", type(error).__name__, str(error))
    return ("ok", array.tobytes(), array.shape, array.dtype.str, parsed.model, parsed.version)


def assert_same(body: bytes, **kwargs: Any) -> tuple[Any, ...]:
    fast, general = decode(body, fast=True, **kwargs), decode(body, fast=False, **kwargs)
    assert fast == general, body[:200]
    return fast


def tensor(shape: tuple[int, int, int], seed: int = 0) -> list[Any]:
    values: list[Any] = np.random.default_rng(seed).normal(size=shape).tolist()
    return values


PLAIN = [
    orjson.dumps({"inputs": tensor((3, 2, 1))}),
    orjson.dumps({"inputs": tensor((1, 1, 1))}),
    orjson.dumps({"inputs": tensor((4, 3, 2)), "model": "lstm", "version": 2}),
    json.dumps({"inputs": tensor((2, 5, 1))}).encode(),  # spaces after every comma
    b' \n{ "inputs" :[[[1], [2 ]] , [[ 3],[-4e-2]]]\n, "version":1 }\n',
    b'{"inputs":[[[0,1],[1,0]]]}',  # integers and the 0/1 that could have been booleans
    b'{"inputs":[[[true]]]}',  # a boolean: same error on both paths
    b'{"inputs":[[[null],[1]]]}',
    b'{"inputs":[[[1e39]]]}',  # beyond float32
    b'{"inputs":[[[{}]]]}',
]


@pytest.mark.parametrize("body", PLAIN, ids=range(len(PLAIN)))
def test_plain_bodies_take_the_fast_path_and_agree(body: bytes) -> None:
    split = split_predict_body(body)
    assert split is not None
    assert_same(body, features=split[0].shape[2])


def test_fast_path_values_and_fields() -> None:
    values = tensor((5, 3, 1), seed=3)
    split = split_predict_body(orjson.dumps({"inputs": values, "model": "m", "version": 4}))
    assert split is not None
    flat, fields = split
    assert flat.shape == (5, 3, 1) and fields == {"model": "m", "version": 4}
    assert flat.leaves == np.asarray(values).reshape(-1).tolist()


FALLBACK = [
    b'{"model":"lstm","inputs":[[[1]]]}',  # inputs not first
    b'{"\\u0069nputs":[[[1]]]}',  # escaped key
    b'{"inputs":[[["1"]]]}',  # a string
    b'{"inputs":[[[1]] ]}',  # whitespace inside the closing brackets
    b'{"inputs":[[[1],[2]],[[3]]]}',  # ragged
    b'{"inputs":[[[1,2],[3]]]}',  # ragged innermost
    b'{"inputs":[[[]]]}',  # empty
    b'{"inputs":[[[1]],[]]}',
    b'{"inputs":[[[[1]]]]}',  # 4-D
    b'{"inputs":[[[1]]5]}',  # a value outside an innermost list
    b'{"inputs":[[[]]5]}',
    b'{"inputs":[[5[1]]]}',
    b'{"inputs":[[[1],]]}',  # trailing comma
    b'{"inputs":[[[1,]]]}',
    b'{"inputs":[[[,1]]]}',
    b'{"inputs":[[[1]]],}',  # trailing comma after the tensor
    b'{"inputs":[[[1]]], "inputs":[[[2]]]}',  # a duplicate key: the last one counts
    b'{"inputs":[[[1]]], "inputs":0}',
    b'{"inputs":[[[1]]], "x": "]]]"}',  # "]]]" inside a later string
    b'{"inputs":[[[1]]]} x',
    b'{"inputs":[[[1]]]',
    b'{"inputs":[[[1 2]]]}',  # two numbers in one slot: not JSON
    b'{"inputs":[[[NaN]]]}',
]


@pytest.mark.parametrize("body", FALLBACK, ids=range(len(FALLBACK)))
def test_other_bodies_fall_back_and_agree(body: bytes) -> None:
    assert split_predict_body(body) is None
    assert_same(body)


def test_element_limit_and_features_give_the_same_errors() -> None:
    body = orjson.dumps({"inputs": tensor((50, 4, 1))})
    assert assert_same(body, max_elements=199)[1] == "PayloadTooLargeError"
    assert assert_same(body, features=2)[1] == "InvalidInputError"


# Mutations: valid bodies, then a few insertions or deletions of JSON's building blocks at random places.
TOKENS = [b"[", b"]", b",", b" ", b"\n", b"1", b"-", b".", b"e5", b"0", b"true", b"null", b'"a"', b"{}", b":", b"]]]"]
shapes = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
edits = st.lists(
    st.tuples(st.booleans(), st.floats(0, 1, exclude_max=True), st.sampled_from(TOKENS), st.integers(1, 3)),
    max_size=3,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, seed=st.integers(0, 2**16), spaced=st.booleans(), extra=st.booleans(), changes=edits)
def test_mutated_bodies_agree(
    shape: tuple[int, int, int], seed: int, spaced: bool, extra: bool, changes: list[tuple[bool, float, bytes, int]]
) -> None:
    fields: dict[str, Any] = {"inputs": tensor(shape, seed)}
    if extra:
        fields["version"] = 1
    body = json.dumps(fields).encode() if spaced else orjson.dumps(fields)
    for insert, where, token, width in changes:
        at = int(where * len(body))
        body = body[:at] + token + body[at:] if insert else body[:at] + body[at + width :]
    assert_same(body, features=shape[2])
