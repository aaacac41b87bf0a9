"""Sequences over several workers: each sequence lives on the worker its id hashes to; the others forward to it.

With `lstm-serve --workers N` every worker has its own listening socket and the kernel spreads connections over
them, so consecutive chunks of one sequence may reach different workers. The state of a sequence lives in one
of them, its owner (service/peers.py: a stable hash of the model and the sequence id, modulo N). A worker that
gets a chunk it does not own forwards it over a Unix socket to the owner (PeerRouter) and answers with what the
owner answered; the owner runs forwarded chunks as its own (PeerServer). The frames are service/sequence_wire.py.

Never a wrong answer: a chunk whose owner has died fails with SequenceLostError (503) while the owner is down,
and with SequenceStateError (409) from the owner's successor, which never saw the sequence and says it may have
restarted. A forwarded step whose answer the forwarder gave up on (a timeout, a broken connection) leaves the
sequence in a state its client cannot know, so the owner discards it: the next chunk is a 409, not a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from datetime import UTC, datetime
from typing import Protocol

import model_store
from service import metrics
from service.errors import NotReadyError, SequenceLostError, SequenceStateError, ServiceError
from service.peers import Peers
from service.sequence_types import SequenceId, SequenceOutput, SequenceStep
from service.sequence_wire import (
    Answer,
    EndRequest,
    Request,
    WireError,
    answer_of,
    encode_answer,
    encode_request,
    read_frame,
    request_of,
)

log = logging.getLogger("service.sequence_router")

ANSWER_MAX_BODY = 1 << 31  # answers come from a sibling worker, which bounds the request that caused them


class SequencePlane(Protocol):
    """What the router needs of the DataPlane: run a step or an end here, never through the router again."""

    async def sequence_step(self, step: SequenceStep, *, local: bool = False) -> SequenceOutput: ...
    async def end_sequence(self, model: str, sequence_id: SequenceId, *, local: bool = False) -> bool: ...


class PeerUnreachableError(Exception):
    """No connection to the peer could be made: it is not listening (dead, restarting, or not started yet)."""


class PeerGoneError(Exception):
    """The connection to the peer ended (or broke) before it answered: it may have died mid-step."""


def _describe(request: Request) -> str:
    return f"sequence {request.sequence_id!r} of model {request.model!r}"


class PeerClient:
    """One persistent connection to a peer's socket, opened on first use and again after it breaks; many requests
    in flight at once, each answer matched to its request by id."""

    def __init__(self, peers: Peers, index: int, connect_timeout: float) -> None:
        self.index = index
        self.path = peers.socket_path(index)
        self.connect_timeout = connect_timeout
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_unix_connection(self.path)
            except (OSError, TimeoutError) as exc:
                raise PeerUnreachableError(f"{type(exc).__name__}: {exc}") from exc
            self._writer = writer
            self._reading = asyncio.create_task(self._read(reader, writer), name=f"peer-{self.index}-reader")
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        why = "the connection ended"
        try:
            while (frame := await read_frame(reader, ANSWER_MAX_BODY)) is not None:
                request_id, answer = answer_of(frame)
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(answer)
        except (WireError, asyncio.IncompleteReadError, OSError) as exc:
            why = f"the connection broke ({type(exc).__name__}: {exc})"
            log.warning("worker %d's peer connection: %s", self.index, why)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(PeerGoneError(why))

    async def call(self, request: Request, timeout: float) -> Answer:
        """The peer's answer to `request`: PeerUnreachableError, PeerGoneError, or TimeoutError after `timeout` s."""
        writer = await self._connected()
        request_id = next(self._ids)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(encode_request(request_id, request))
            async with asyncio.timeout(timeout):  # a peer that stops reading blocks the drain: bounded too
                try:
                    await writer.drain()
                except OSError as exc:
                    raise PeerGoneError(f"the connection broke ({type(exc).__name__}: {exc})") from exc
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading


class PeerRouter:
    """The SequenceRouter of one worker of several: runs the steps of the sequences it owns, forwards the others."""

    def __init__(self, plane: SequencePlane, peers: Peers, *, forward_timeout: float, connect_timeout: float) -> None:
        self.plane = plane
        self.peers = peers
        self.forward_timeout = forward_timeout
        self.started = time.time()
        self._discards: set[asyncio.Task[None]] = set()
        self.clients = {
            index: PeerClient(peers, index, connect_timeout) for index in range(peers.count) if index != peers.index
        }

    # ---- SequenceRouter ------------------------------------------------------------------------------------

    async def step(self, step: SequenceStep) -> SequenceOutput:
        owner = self.peers.owner(step.model, step.sequence_id)
        if owner == self.peers.index:
            return await self.run_step(step)
        answer = await self._forward(owner, step)
        if isinstance(answer, SequenceOutput):
            metrics.FORWARDED_STEPS.labels("ok").inc()
            return answer
        if isinstance(answer, Exception):
            metrics.FORWARDED_STEPS.labels("error").inc()
            raise answer
        raise SequenceLostError(f"worker {owner} answered a step of {_describe(step)} with {answer!r}")

    async def end(self, model: str, sequence_id: SequenceId) -> bool:
        owner = self.peers.owner(model, sequence_id)
        if owner == self.peers.index:
            return await self.plane.end_sequence(model, sequence_id, local=True)
        answer = await self._forward(owner, EndRequest(model, sequence_id))
        if isinstance(answer, Exception):
            raise answer
        if not isinstance(answer, bool):
            raise SequenceLostError(f"worker {owner} answered an end of sequence {sequence_id!r} with a step's output")
        return answer

    # ---- the owner's side ------------------------------------------------------------------------------------

    async def run_step(self, step: SequenceStep) -> SequenceOutput:
        """Run a step of a sequence this worker owns (from its own client or forwarded by a peer)."""
        try:
            return await self.plane.sequence_step(step, local=True)
        except SequenceStateError as exc:
            if step.start or self.peers.starts == 0:
                raise
            since = datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds")
            raise type(exc)(
                f"{exc}. The worker that holds this sequence id (worker {self.peers.index}) restarted at {since}: "
                "if the sequence started before that, its state was lost with the worker it lived in"
            ) from exc

    async def run(self, request: Request) -> Answer:
        """The answer to a request a peer forwarded: an output, whether an end found its sequence, or the error."""
        try:
            if isinstance(request, EndRequest):
                return await self.plane.end_sequence(request.model, request.sequence_id, local=True)
            return await self.run_step(request)
        except (ServiceError, model_store.StoreError) as exc:
            return exc
        except Exception:
            log.exception("a forwarded request for %s failed", _describe(request))
            return ServiceError(f"internal error in worker {self.peers.index} (pid {os.getpid()}); see the server log")

    # ---- forwarding ------------------------------------------------------------------------------------------

    async def _forward(self, owner: int, request: Request) -> Answer:
        what = _describe(request)
        starting = isinstance(request, SequenceStep) and request.start
        try:
            return await self.clients[owner].call(request, self.forward_timeout)
        except PeerUnreachableError as exc:
            self._count(request, "unreachable")
            if starting:  # nothing was lost: the owner is starting or restarting
                raise NotReadyError(
                    f"worker {owner}, which holds {what}, cannot be reached ({exc}): it may be starting or "
                    "restarting; try again shortly"
                ) from None
            raise SequenceLostError(
                f"worker {owner}, which holds {what}, cannot be reached ({exc}): it may have died, and a worker that "
                "dies loses the sequences it held; start the sequence again with sequence_start once it is back"
            ) from None
        except PeerGoneError as exc:
            self._count(request, "lost")
            raise SequenceLostError(
                f"worker {owner}, which holds {what}, did not answer: {exc}; it may have died and lost the sequence; "
                "start it again with sequence_start"
            ) from None
        except TimeoutError:
            self._count(request, "timeout")
            # The owner may still run the step: its client cannot know the state it leaves, so it is discarded.
            if isinstance(request, SequenceStep):
                discard = asyncio.create_task(self._discard(owner, request), name="peer-discard")
                self._discards.add(discard)  # held until done: the loop keeps only a weak reference
                discard.add_done_callback(self._discards.discard)
            raise SequenceLostError(
                f"worker {owner}, which holds {what}, did not answer within {self.forward_timeout:g} s "
                "(LSTM_SEQUENCE_FORWARD_TIMEOUT); the sequence is discarded: start it again with sequence_start"
            ) from None

    def _count(self, request: Request, outcome: str) -> None:
        if isinstance(request, SequenceStep):
            metrics.FORWARDED_STEPS.labels(outcome).inc()

    async def _discard(self, owner: int, step: SequenceStep) -> None:
        with contextlib.suppress(Exception):
            await self.clients[owner].call(EndRequest(step.model, step.sequence_id), self.forward_timeout)

    async def close(self) -> None:
        for discard in list(self._discards):  # best effort: one still waiting at shutdown is dropped
            discard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await discard
        for client in self.clients.values():
            await client.close()


class PeerServer:
    """Listens on this worker's peer socket and answers the requests other workers forward (PeerRouter.run).

    Requests for one sequence run in the order they arrived; a step whose forwarder is gone before its answer could
    be sent has its sequence discarded."""

    def __init__(self, router: PeerRouter, max_body: int) -> None:
        self.router = router
        self.path = router.peers.socket_path(router.peers.index)
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._tails: dict[tuple[str, SequenceId], asyncio.Future[None]] = {}

    async def start(self) -> None:
        # A file here is the socket of this place's previous worker (the folder is this lstm-serve's alone).
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        os.chmod(self.path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        gone = asyncio.Event()
        answering: set[asyncio.Task[None]] = set()
        try:
            while (frame := await read_frame(reader, self.max_body)) is not None:
                request_id, request = request_of(frame)
                key = (request.model, request.sequence_id)
                before, done = self._tails.get(key), asyncio.get_running_loop().create_future()
                self._tails[key] = done
                answer = asyncio.create_task(self._answer(request_id, request, writer, gone, before, done))
                answering.add(answer)
                answer.add_done_callback(answering.discard)
        except (WireError, asyncio.IncompleteReadError, OSError) as exc:
            log.warning("worker %d: a peer connection broke: %s: %s", self.router.peers.index, type(exc).__name__, exc)
        finally:
            gone.set()
            self._connections.pop(task, None)
            if answering:  # they discard the sequences whose answers cannot be delivered
                await asyncio.wait(answering)
            writer.close()

    async def _answer(
        self,
        request_id: int,
        request: Request,
        writer: asyncio.StreamWriter,
        gone: asyncio.Event,
        before: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        key = (request.model, request.sequence_id)
        try:
            if before is not None:
                await before
            answer = await self.router.run(request)
            if gone.is_set() or writer.is_closing():
                if isinstance(answer, SequenceOutput):
                    log.warning(
                        "worker %d: the forwarder of a step of %s is gone; discarding the sequence, whose state its "
                        "client cannot know",
                        self.router.peers.index,
                        _describe(request),
                    )
                    await self.router.run(EndRequest(request.model, request.sequence_id))
                return
            writer.write(encode_answer(request_id, answer))
            await writer.drain()
        except OSError:
            pass  # the forwarder went away while its answer was written; its read side sees the break
        finally:
            done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Closing a connection ends its reader, which lets the chunks in flight finish (the data plane is still
        # open); cancelling the task instead would make asyncio log the cancellation as an error.
        for writer in list(self._connections.values()):
            writer.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self.router.forward_timeout)
        self.path.unlink(missing_ok=True)
