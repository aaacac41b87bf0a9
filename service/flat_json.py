"""A fast reading of /predict bodies: the (seq, batch, features) tensor without a Python list per row.

orjson turns `[[[x], [x], ...], ...]` into one list per innermost row: 32 500 lists for a (500, 64, 1)
request. Building them costs as much as the parse itself, flattening them again costs more, and they
wake the cyclic garbage collector dozens of times. Here the body's text is checked against the exact
bracket-and-comma layout of a rectangular 3-D array, and the numbers are then parsed as one flat JSON
array. A body that does not plainly have that layout gets None and the caller takes the general orjson
path, which also words every error: `inputs` must be the first field, its text must open with `[[[`
and close with `]]]` (JSON whitespace elsewhere is fine) and hold no strings, and the nesting must be
rectangular. tests/test_flat_json.py checks on generated and mutated bodies that both paths agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

_WHITESPACE = b" \t\n\r"  # JSON's whitespace
# Brackets and commas stay; every other byte (a number's characters, or anything else) becomes "v".
_MARKS = bytes(c if c in b"[]," else ord("v") for c in range(256))
# With whitespace dropped and values marked "v", each of these pairs means a value outside an innermost
# list ("]v", "v[") or an empty slot in one ("[]", "[,", ",]", ",,"); none occurs in a well-formed tensor.
_MISPLACED = np.zeros(1 << 16, dtype=bool)
_MISPLACED[[int.from_bytes(pair, "little") for pair in (b"]v", b"v[", b"[]", b"[,", b",]", b",,")]] = True
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")
_HEAD = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"inputs"[ \t\n\r]*:[ \t\n\r]*(?=\[\[\[)')
_TAIL = re.compile(rb"[ \t\n\r]*(?:(,)|\}[ \t\n\r]*\Z)")


@dataclass(frozen=True)
class FlatTensor:
    """A /predict tensor known to be nested rectangularly as `shape`, with its values in row-major order."""

    shape: tuple[int, int, int]
    leaves: list[Any]  # what flattening the nested lists would give: the same objects in the same order


def _layout_shape(layout: bytes) -> tuple[int, int, int] | None:
    """(seq, batch, features) if `layout` (the brackets and commas alone) is a rectangular 3-D array's."""
    features = layout.count(b",", 0, layout.find(b"]")) + 1
    row = b"[" + b"," * (features - 1) + b"]"  # one innermost list: [,,]
    batch = layout.count(b"]", 0, layout.find(b"]]") + 1)
    step = b"[" + b",".join([row] * batch) + b"]"  # one time step: [[,,],[,,],...]
    seq, remainder = divmod(len(layout) - 1, len(step) + 1)  # "[" + seq × (step + ",") with the last "," a "]"
    if seq < 1 or remainder or layout != b"[" + b",".join([step] * seq) + b"]":
        return None
    return seq, batch, features


def _has_misplaced_pair(marks: bytes) -> bool:
    # Every adjacent pair, read as little-endian uint16 at even and at odd offsets: two table lookups at C speed
    # (bytes.find for a two-byte pattern is slower here, "v" being most of the text).
    even = np.frombuffer(marks, dtype="<u2", count=len(marks) // 2)
    odd = np.frombuffer(marks, dtype="<u2", count=(len(marks) - 1) // 2, offset=1)
    return bool(_MISPLACED[even].any() or _MISPLACED[odd].any())


def split_predict_body(body: bytes) -> tuple[FlatTensor, dict[str, Any]] | None:
    """The tensor and the other fields of `{"inputs": <3-D array>, ...}`, or None to take the general path."""
    head = _HEAD.match(body)
    if head is None:
        return None
    start = head.end()
    # The tensor's text ends at the body's last "]]]": nothing after it can hold one outside a string, and a string
    # in between puts a quote in the text. The layout check then proves the text is one balanced 3-D array.
    end = body.rfind(b"]]]", start) + 3
    if end < 3:
        return None
    text = body[start:end]
    if b'"' in text:  # a string inside the tensor may hold brackets or commas: leave it to the general path
        return None
    marks = text.translate(_MARKS, _WHITESPACE)
    if _has_misplaced_pair(marks):
        return None
    shape = _layout_shape(marks.translate(None, b"v"))
    tail = _TAIL.match(body, end)
    if shape is None or tail is None:
        return None
    fields: dict[str, Any] = {}
    if tail.group(1):  # more fields follow: they must form a JSON object of their own, without "inputs"
        try:
            rest = orjson.loads(b"{" + body[tail.end() :])
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rest, dict) or not rest or "inputs" in rest:
            return None
        fields = rest
    try:
        leaves = orjson.loads(b"[" + text.translate(_BRACKETS_TO_SPACES) + b"]")
    except orjson.JSONDecodeError:  # e.g. two numbers in one slot, or NaN: the general path words it
        return None
    return FlatTensor(shape, leaves), fields
