"""WebSocket streams, one sequence per connection: WS /v2/models/{name}[/versions/{v}]/stream over the data plane.

The handshake is refused with an HTTP status (ASGI's denial response) when this worker has LSTM_MAX_STREAMS
streams open (429), or the model or version cannot be served (404, 422, 503). Once accepted, the connection
gets a sequence id of its own; its first message starts the sequence, every message is one step
(DataPlane.sequence_step), and the connection's close ends it (DataPlane.end_sequence). The message format
and every close code are in service/stream_codec.py and docs/sequences.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

import model_store
from service import metrics
from service.components import Components
from service.dataplane import DataPlane, parse_version
from service.errors import STATUS_BY_ERROR, BusyError, SequenceUnsupportedError, ServiceError, status_for
from service.responses import error_response
from service.sequence_types import SequenceStep
from service.stream_codec import (
    IDLE,
    INTERNAL,
    NORMAL,
    TOO_BIG,
    Float32Array,
    StreamMessage,
    close_code,
    close_reason,
    decode_binary,
    decode_text,
    encode_binary_reply,
    encode_error,
    encode_text_reply,
)

log = logging.getLogger("service.stream")
router = APIRouter(prefix="/v2", tags=["open inference protocol"])
DomainError = (ServiceError, model_store.StoreError)  # what status_for maps; anything else is a 1011
NO_STATUS = 1005  # RFC 6455: the peer closed without a code
# The metric's code label: RFC 6455's codes and every code this server sends; a client's own 4xxx code is
# "other", so that no client can make up label values without bound.
COUNTED_CODES = frozenset(range(1000, 1016)) | {IDLE} | {close_code(status) for _, status in STATUS_BY_ERROR}


@router.websocket("/models/{name}/stream")
async def stream(websocket: WebSocket, name: str) -> None:
    """One sequence of the serving version per connection: samples in, outputs out (docs/sequences.md)."""
    await _serve(websocket, name, None)


@router.websocket("/models/{name}/versions/{model_version}/stream")
async def stream_version(websocket: WebSocket, name: str, model_version: str) -> None:
    """One sequence of one version (a number or an alias) per connection (docs/sequences.md)."""
    await _serve(websocket, name, model_version)


async def _serve(websocket: WebSocket, name: str, version_text: str | None) -> None:
    components: Components = websocket.app.state.components
    limit = components.settings.max_streams
    if components.open_streams >= limit:
        error = BusyError(f"{components.open_streams} streams are open, the most this worker takes (LSTM_MAX_STREAMS)")
        code = await _refuse(websocket, f"{error}; try again later", status_for(error))
    else:
        # Counted before the first await: a burst of handshakes cannot all pass the check.
        components.open_streams += 1
        metrics.STREAMS_OPEN.inc()
        try:
            code = await _Stream(websocket, components, name).run(version_text)
        finally:
            components.open_streams -= 1
            metrics.STREAMS_OPEN.dec()
    metrics.STREAM_CLOSES.labels(str(code) if code in COUNTED_CODES else "other").inc()


async def _refuse(websocket: WebSocket, message: str, status: int) -> int:
    """Answer the handshake with an HTTP error; where the server cannot (no denial-response extension), accept
    and close with the matching code. Returns the close code that stands for it."""
    try:
        await websocket.send_denial_response(error_response(message, status))
    except RuntimeError:
        await websocket.accept()
        await websocket.send_text(encode_error(message, status))
        await websocket.close(close_code(status), close_reason(message))
    return close_code(status)


class _Stream:
    """One accepted connection and the sequence it carries."""

    def __init__(self, websocket: WebSocket, components: Components, name: str) -> None:
        self.websocket = websocket
        self.dataplane: DataPlane = components.dataplane
        self.settings = components.settings
        self.name = name
        # Unguessable, so that no OIP request can step into a stream's sequence by naming its id.
        self.sequence_id = f"ws-{secrets.token_urlsafe(12)}"
        self.steps = 0  # messages answered; the first starts the sequence
        self.live = False  # started and not yet ended: the close must end it

    async def run(self, version_text: str | None) -> int:
        """Serve the connection until it closes; the close code."""
        try:
            version = None if version_text is None else parse_version(version_text)
            served = await self.dataplane.model_for(self.name, version)
            if not served.stateful:
                raise SequenceUnsupportedError(
                    f"model {served.name!r} version {served.version} was exported before sequence support (it has "
                    "no state-carrying method), so it cannot stream; stream a version trained by this lstm-service"
                )
        except DomainError as error:
            return await _refuse(self.websocket, str(error), status_for(error))
        await self.websocket.accept()
        input_size = served.input_size
        try:
            while True:
                received = await self._receive()
                if received is None:
                    return await self._close(IDLE, self._idle_message())
                if received["type"] == "websocket.disconnect":
                    return int(received.get("code") or NO_STATUS)  # the client's close, or the server's 1012
                too_big = self._too_big(received)
                if too_big:
                    return await self._close(TOO_BIG, too_big)
                message = self._decode(received, input_size)
                if message.samples is None:
                    return await self._close(NORMAL, "the sequence ended")
                step = SequenceStep(self.name, version, self.sequence_id, not self.live, message.end, message.samples)
                output = await self.dataplane.sequence_step(step, local=True)
                self.live = not message.end
                self.steps += 1
                if output.version != served.version:  # a promotion between the handshake and the start
                    served = await self.dataplane.model_for(self.name, output.version)
                    input_size = served.input_size
                await self._reply(message, output.outputs, output.version)
                if message.end:
                    return await self._close(NORMAL, "the sequence ended")
        except DomainError as error:
            status = status_for(error)
            if status >= 500:
                log.warning("stream %s of model %r: %s", self.sequence_id, self.name, error)
            return await self._fail(str(error), status, close_code(status))
        except WebSocketDisconnect as gone:  # a send after the client went away
            return gone.code
        except Exception:
            log.exception("stream %s of model %r: unexpected error", self.sequence_id, self.name)
            return await self._fail(f"internal error; see the server log (stream {self.sequence_id})", 500, INTERNAL)
        finally:
            await self._end()

    async def _receive(self) -> Message | None:
        """The next ASGI message, or None when none came within the sequence idle timeout."""
        try:
            async with asyncio.timeout(self.settings.sequence_idle_timeout):  # no task per message, as wait_for makes
                return await self.websocket.receive()
        except TimeoutError:
            return None

    def _idle_message(self) -> str:
        return (
            f"no message for {self.settings.sequence_idle_timeout:g} s (LSTM_SEQUENCE_IDLE_TIMEOUT); "
            "the sequence has ended"
        )

    def _too_big(self, received: Message) -> str | None:
        """Why a message is over the body limit (uvicorn's ws_max_size closes before; other servers may not)."""
        data = received.get("text") if received.get("text") is not None else received.get("bytes")
        size = len(data or b"")  # characters of a text: a lower bound of its bytes
        limit = self.settings.max_body_bytes
        if size <= limit:
            return None
        return f"message of {size} bytes is over the limit of {limit} bytes (LSTM_MAX_BODY_BYTES)"

    def _decode(self, received: Message, input_size: int) -> StreamMessage:
        limit = self.dataplane.max_elements
        text = received.get("text")
        if text is not None:
            return decode_text(text, input_size=input_size, max_elements=limit)
        return decode_binary(received.get("bytes") or b"", input_size=input_size, max_elements=limit)

    async def _reply(self, message: StreamMessage, outputs: Float32Array, version: int) -> None:
        if message.binary:
            await self.websocket.send_bytes(encode_binary_reply(outputs))
            return
        reply = encode_text_reply(
            outputs, model=self.name, version=version, sequence_id=self.sequence_id, step=self.steps, end=message.end
        )
        await self.websocket.send_text(reply)

    async def _close(self, code: int, reason: str) -> int:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may already be gone
            await self.websocket.close(code, close_reason(reason))
        return code

    async def _fail(self, message: str, status: int, code: int) -> int:
        """The error reply, then the close."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.websocket.send_text(encode_error(message, status))
        return await self._close(code, message)

    async def _end(self) -> None:
        """Free the sequence's state when the connection ends before the sequence did."""
        if not self.live:
            return
        self.live = False
        try:
            await self.dataplane.end_sequence(self.name, self.sequence_id, local=True)
        except Exception as error:  # the close is already decided; a state that stays is expired by idle time
            log.warning("stream %s of model %r: could not end its sequence: %s", self.sequence_id, self.name, error)
