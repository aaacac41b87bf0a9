"""WebSocket streams of one sequence (WS /v2/models/{name}/stream): send samples, receive outputs as they come.

with client.stream("lstm") as stream:       # one connection = one sequence; the server keeps the LSTM's state
    for sample in sensor:
        step = stream.step([sample])        # send, then wait for this chunk's outputs
        print(step.outputs[:, 0])           # (seq, output_size)
    stream.end()                            # or leave the block: closing the connection ends the sequence

The message format is the server's docs/sequences.md, "WebSocket": JSON text messages, or with binary=True raw
little-endian float32 both ways (the outputs of a binary reply carry no model or version).
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lstm_client.errors import StreamClosedError, error_for

NORMAL = 1000  # the server's close after the sequence's last chunk
ERROR_CODES = range(4000, 5000)  # 4000 + the HTTP status of the error


@dataclass(frozen=True)
class StreamStep:
    """The outputs of one chunk, in the order the chunks were sent."""

    outputs: np.ndarray  # (seq, output_size) float32: one row per sample sent
    model: str | None  # None for a binary reply
    version: int | None
    step: int  # 1 for the sequence's first chunk
    end: bool  # the sequence's last chunk: the server closes the stream after it


def _rows(samples: Any) -> np.ndarray:
    """(seq, input_size) float32 from a number, a list of numbers (one per step), or (seq, [1,] input_size)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 3:
        if x.shape[1] != 1:
            raise ValueError(f"a stream carries one sequence, but samples of shape {x.shape} have batch {x.shape[1]}")
        x = x[:, 0, :]
    elif x.ndim <= 1:
        x = x.reshape(-1, 1)
    elif x.ndim != 2:
        raise ValueError(f"samples of shape {x.shape}; expected (seq,), (seq, input_size) or (seq, 1, input_size)")
    return np.ascontiguousarray(x)


def _closed_error(closed: ConnectionClosed) -> Exception:
    """What the server's close means: its error status (4000 + status), or how the stream ended."""
    if closed.rcvd is None:
        return StreamClosedError(1006, "the connection was lost without a close frame")
    code, reason = closed.rcvd.code, closed.rcvd.reason
    if code in ERROR_CODES:
        return error_for(code - 4000, reason)
    return StreamClosedError(code, reason)


class Stream:
    """An open stream (Client.stream); a context manager whose exit closes it, and so ends its sequence."""

    def __init__(self, connection: ClientConnection, binary: bool, closing: contextlib.ExitStack | None = None) -> None:
        self._connection = connection
        self._closing = closing or contextlib.ExitStack()
        self.binary = binary
        self.sequence_id: str | None = None  # the server's id for this stream's sequence (from the first text reply)
        self._pending: collections.deque[int] = collections.deque()  # samples per chunk sent, not yet answered
        self._steps = 0
        self._error: Exception | None = None  # an error reply, raised with the close that follows it

    @classmethod
    def open(cls, url: str, headers: Mapping[str, str], timeout: float, binary: bool = False) -> Stream:
        """Connect to `url` (ws:// or wss://); a refused handshake raises the client's error for its status."""
        closing = contextlib.ExitStack()
        try:
            # Entered as a context manager, as websockets 17.1+ wants (earlier ones connect in connect() itself).
            opened = connect(url, additional_headers=dict(headers), open_timeout=timeout, max_size=None)
            connection = closing.enter_context(opened)
        except InvalidStatus as refused:
            response = refused.response
            try:
                message = str(json.loads(response.body or b"{}").get("error") or "")
            except (ValueError, AttributeError):
                message = ""
            raise error_for(response.status_code, message or response.reason_phrase) from None
        return cls(connection, binary, closing)

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def send(self, samples: Any, end: bool = False) -> None:
        """Send a chunk of new samples without waiting for its outputs (read them with recv() or by iterating)."""
        rows = _rows(samples)
        if self.binary:
            if end:
                raise ValueError("a binary message cannot end the sequence; call end() after it")
            message: str | bytes = rows.astype("<f4", copy=False).tobytes()
        else:
            values = rows[:, 0].tolist() if rows.shape[1] == 1 else rows.tolist()
            body: dict[str, Any] = {"samples": values}
            if end:
                body["end"] = True
            message = json.dumps(body, separators=(",", ":"), allow_nan=False)
        try:
            self._connection.send(message)
        except ConnectionClosed as closed:
            raise self._error or _closed_error(closed) from None
        self._pending.append(len(rows))

    def recv(self, timeout: float | None = None) -> StreamStep:
        """The outputs of the oldest chunk not yet answered; raises the server's error, or TimeoutError."""
        try:
            data = self._connection.recv(timeout)
        except ConnectionClosed as closed:
            self._pending.clear()  # nothing more will be answered
            raise self._error or _closed_error(closed) from None
        if isinstance(data, bytes):
            steps = self._pending.popleft() if self._pending else 1
            self._steps += 1
            outputs = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(steps, -1)
            return StreamStep(outputs, None, None, self._steps, False)
        reply = json.loads(data)
        if "error" in reply:  # the server closes the stream after it
            self._pending.clear()
            self._error = error_for(int(reply.get("status", 500)), str(reply["error"]))
            raise self._error
        if self._pending:
            self._pending.popleft()
        self._steps = int(reply["step"])
        self.sequence_id = reply.get("sequence_id", self.sequence_id)
        outputs = np.asarray(reply["outputs"], dtype=np.float32)
        return StreamStep(
            outputs.reshape(len(outputs), -1),
            str(reply["model"]),
            int(reply["version"]),
            self._steps,
            bool(reply["end"]),
        )

    def step(self, samples: Any, end: bool = False, timeout: float | None = None) -> StreamStep:
        """Send a chunk and wait for its outputs. Read the outputs of chunks sent with send() first (recv(), or
        iterate): their replies come before this one's."""
        if self._pending:
            raise RuntimeError(
                f"{len(self._pending)} chunk(s) sent with send() are not read yet; read them (recv() or iterate) first"
            )
        self.send(samples, end=end)
        return self.recv(timeout)

    def __iter__(self) -> Iterator[StreamStep]:
        """The outputs of every chunk sent and not yet read, as they come."""
        while self._pending:
            yield self.recv()

    def end(self, timeout: float | None = None) -> None:
        """End the sequence (`{"end": true}`) and wait for the server's close; unread outputs are dropped."""
        try:
            self._connection.send('{"end":true}')
            while True:
                self._connection.recv(timeout)
        except ConnectionClosedOK:
            return
        except ConnectionClosed as closed:
            raise _closed_error(closed) from None

    def close(self) -> None:
        """Close the connection: the server ends the sequence."""
        self._connection.close()
        self._closing.close()

    @property
    def close_code(self) -> int | None:
        """The server's close code once the stream has closed."""
        return self._connection.close_code
