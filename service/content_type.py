"""The one Content-Type rule of every route that reads a body: JSON, or the OIP binary tensor extension."""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from service.responses import error_response

JSON: Final = b"application/json"
# Read as JSON besides application/json and application/*+json, for clients that are not browsers: no
# Content-Type (Triton's HTTP client sends none, nor do raw HTTP clients) and form-encoded, which is what
# `curl -d` and urllib send unless told otherwise.
LENIENT: Final = frozenset({b"", b"application/x-www-form-urlencoded"})
WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH"})
OIP_BINARY_HEADER: Final = b"inference-header-content-length"
SHOWN_MAX: Final = 100  # characters of a refused Content-Type quoted back
# POST /models/{name}/versions reads a model file: these types besides JSON's rules (none of them is one a browser
# page may send to another site without a CORS preflight). Which format each names is in service/repository.py.
MODEL_FILE_TYPES: Final = frozenset(
    {b"application/octet-stream", b"application/zip", b"application/vnd.pytorch.torchscript", b"application/onnx"}
)


def is_model_upload(path: str) -> bool:
    """Whether `path` is POST /models/{name}/versions's."""
    parts = path.split("/")
    return len(parts) == 4 and parts[0] == "" and parts[1] == "models" and parts[3] == "versions"


def media_type(value: bytes) -> bytes:
    """`application/json` from `Application/JSON; charset=utf-8`."""
    return value.split(b";", 1)[0].strip().lower()


class ContentTypeMiddleware:
    """Answers 415 to a body it will not read as JSON, so that every route treats Content-Type alike.

    - `application/json` and `application/*+json`: JSON.
    - No Content-Type, or `application/x-www-form-urlencoded`: JSON too, relabelled `application/json` on
      the way in (FastAPI parses the body it reads itself, PUT .../aliases/..., only when labelled so) -
      unless the request comes from a browser page (it carries `Origin`). Those two types, like
      `text/plain`, are what a page may send to another site without a CORS preflight; with no token,
      management is open to loopback, so a page open in a browser on the serving host could otherwise
      queue training jobs. With `application/json` the browser asks first, and CORS (off by default) decides.
    - A request to an OIP `.../infer` route that carries `Inference-Header-Content-Length` uses the binary
      tensor extension, whatever its type (Triton's client sends none).
    - POST /models/{name}/versions (a model file) also takes MODEL_FILE_TYPES.
    - Anything else (`text/plain`, `multipart/form-data`, `application/xml`, ...): 415 before the route runs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        binary = browser = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                declared = value
            elif name == OIP_BINARY_HEADER:
                binary = True
            elif name == b"origin":
                browser = True
        infer = scope["path"].endswith("/infer")
        media = b"" if declared is None else media_type(declared)
        upload = media in MODEL_FILE_TYPES and is_model_upload(scope["path"])
        if (
            upload
            or (binary and infer)
            or media == JSON
            or (media.startswith(b"application/") and media.endswith(b"+json"))
        ):
            await self.app(scope, receive, send)
        elif media in LENIENT and not browser:
            headers = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
            # In place, not a copy: the routing below records the matched route in this scope, and the
            # metrics middleware outside reads it from there.
            scope["headers"] = [*headers, (b"content-type", JSON)]
            await self.app(scope, receive, send)
        else:
            await error_response(refusal(declared, infer, browser), 415)(scope, receive, send)


def refusal(declared: bytes | None, infer: bool, browser: bool) -> str:
    """What the client sent and what it should send instead."""
    if declared is None:
        shown = "no Content-Type"
    else:
        text = declared.decode("latin-1")
        shown = f"Content-Type {text[:SHOWN_MAX] + '...' if len(text) > SHOWN_MAX else text!r}"
    expected = "send Content-Type: application/json"
    if browser:
        expected += " (a request from a browser page, with Origin, must say so, which makes it subject to CORS)"
    else:
        expected += " (or none)"
    if infer:
        expected += ", or binary tensors with an Inference-Header-Content-Length header"
    return f"{shown} is not accepted: the body is read as JSON; {expected}"
