"""Live sequences over a real lstm-serve, one sample per step: WebSocket streams against OIP REST sequence requests.

    python -m benchmarks.streams [--sequences 1000] [--interval-ms 10] [--seconds 10] [--transport ws rest]

Each of N sequences sends one new sample every `interval` ms (phases spread at random; a late reply delays that
sequence's next sample, so an overloaded server shows up as fewer steps than offered, not as a pile-up) for
`seconds`, after every connection is open. Prints per-step latency (send to reply) p50/p99/max, the steps
answered per second against those offered, errors, and the CPU per step of the server and of this client (both on
the same machine). The model is the default shape (hidden 32, one layer), untrained.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from websockets.asyncio.client import connect

from benchmarks import harness
from benchmarks.sequences import build_store


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, send to reply
    errors: list[str] = field(default_factory=list)


@dataclass
class Window:
    """The measured window, in loop time: set once every sequence is ready, then `go` is set."""

    count: int
    ready: int = 0
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    start: float = 0.0
    stop: float = 0.0

    def one_ready(self) -> None:
        self.ready += 1
        if self.ready == self.count:
            self.all_ready.set()


def sample(t: int, phase: float) -> float:
    return float(np.sin(phase + 0.1 * t))


async def steps(window: Window, interval: float, step: Callable[[int], Awaitable[str | None]], tally: Tally) -> None:
    """Call `step(t)` every `interval` from a random phase until the window closes; an error ends the sequence."""
    loop = asyncio.get_running_loop()
    await window.go.wait()
    next_at = window.start + random.uniform(0, interval)
    t = 0
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if loop.time() >= window.stop:
            return
        sent = time.perf_counter()
        error = await step(t)
        tally.latencies.append(time.perf_counter() - sent)
        if error is not None:
            tally.errors.append(error)
            return
        t += 1
        next_at += interval


async def ws_sequence(url: str, interval: float, window: Window, tally: Tally) -> None:
    phase = random.uniform(0, 6.28)
    try:
        async with connect(url, max_size=None, proxy=None, open_timeout=120) as ws:

            async def step(t: int) -> str | None:
                await ws.send(json.dumps({"samples": [sample(t, phase)]}))
                reply = json.loads(await ws.recv())
                return str(reply["error"]) if "error" in reply else None

            window.one_ready()
            await steps(window, interval, step, tally)
    except Exception as error:
        tally.errors.append(f"{type(error).__name__}: {error}")
        window.one_ready()  # counted, so the others do not wait for it


async def rest_sequence(client: httpx.AsyncClient, index: int, interval: float, window: Window, tally: Tally) -> None:
    phase = random.uniform(0, 6.28)

    async def step(t: int) -> str | None:
        parameters = {"sequence_id": f"bench-{index}", "sequence_start": t == 0}
        tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [sample(t, phase)]}
        answer = await client.post("/v2/models/lstm/infer", json={"parameters": parameters, "inputs": [tensor]})
        return None if answer.status_code == 200 else f"{answer.status_code}: {answer.text[:200]}"

    window.one_ready()  # connections open on first use
    try:
        await steps(window, interval, step, tally)
    except Exception as error:
        tally.errors.append(f"{type(error).__name__}: {error}")


async def run(transport: str, server: harness.ServeProcess, count: int, interval: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally()
    window = Window(count)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
        if transport == "ws":
            url = f"ws://127.0.0.1:{server.port}/v2/models/lstm/stream"
            tasks = [asyncio.create_task(ws_sequence(url, interval, window, tally)) for _ in range(count)]
        else:
            tasks = [asyncio.create_task(rest_sequence(client, i, interval, window, tally)) for i in range(count)]
        await window.all_ready.wait()
        window.start = loop.time() + 0.5
        window.stop = window.start + interval + seconds
        window.go.set()
        cpu_before = harness.cpu_seconds(server.tree())
        client_before = time.process_time()
        await asyncio.gather(*tasks)
        server_cpu = harness.cpu_seconds(server.tree()) - cpu_before
        client_cpu = time.process_time() - client_before
    answered = len(tally.latencies)
    offered = count * seconds / interval
    ms = np.array(tally.latencies) * 1000 if answered else np.array([float("nan")])
    print(
        f"{transport:4s} sequences={count} interval={interval * 1000:g}ms seconds={seconds:g}: steps={answered} "
        f"({answered / offered:.0%} of {offered:.0f} offered, {answered / seconds:.0f}/s) "
        f"p50={np.percentile(ms, 50):.2f}ms p99={np.percentile(ms, 99):.2f}ms max={ms.max():.2f}ms "
        f"errors={len(tally.errors)} server_cpu={server_cpu / max(answered, 1) * 1e6:.0f}us/step "
        f"client_cpu={client_cpu / max(answered, 1) * 1e6:.0f}us/step",
        flush=True,
    )
    for error in sorted(set(tally.errors))[:5]:
        print(f"    error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--transport", nargs="+", choices=("ws", "rest"), default=["ws", "rest"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = build_store(Path(folder) / "store")
        environment = os.environ | {"LSTM_LOG_LEVEL": "warning"}
        flags = ["--max-streams", str(args.sequences + 8), "--max-sequences", str(args.sequences + 8)]
        server = harness.start_lstm_serve(
            store.root, Path(folder) / "serve.log", workers=args.workers, args=flags, env=environment
        )
        with harness.running(server):
            for transport in args.transport:
                asyncio.run(run(transport, server, args.sequences, args.interval_ms / 1000, args.seconds))


if __name__ == "__main__":
    main()
