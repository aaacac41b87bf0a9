"""A Python client for lstm-service (httpx + numpy): predict, models, promote, train and follow jobs.

from lstm_client import Client
with Client("http://127.0.0.1:8000", token=None) as client:
    cosines = client.predict(sines)            # (seq, batch, 1) in, (seq, batch, 1) out
    job = client.train(params={"max_epochs": 500})
    job.wait()                                 # progress line; raises JobFailedError on failure
    with client.stream("lstm") as stream:      # one sequence over a WebSocket; the server keeps the state
        outputs = stream.step([0.0, 0.1]).outputs  # (2, 1): this chunk's cosines
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from lstm_client.errors import BusyError, JobFailedError, raise_for
from lstm_client.progress import Progress
from lstm_client.sse import events
from lstm_client.stream import Stream

FINISHED = ("succeeded", "failed", "cancelled")
# The OIP binary extension's header (KServe V2): the length of the JSON part before the raw tensors.
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
# The server sends a keep-alive comment every 15 s on a quiet event stream; a longer silence is a dead stream.
STREAM_READ_TIMEOUT = 40.0


@dataclass(frozen=True)
class Prediction:
    """A prediction with the model and version that made it."""

    outputs: np.ndarray  # (seq, batch, output_size), float32
    model: str
    version: int


def _json_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class Job:
    """A training job on the server; `data` is its last snapshot (GET /train/{id})."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self._client = client
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def refresh(self) -> dict[str, Any]:
        self.data = self._client._request("GET", f"/train/{self.id}").json()
        return self.data

    def cancel(self) -> dict[str, Any]:
        self.data = self._client._request("DELETE", f"/train/{self.id}").json()
        return self.data

    def watch(self, timeout: float | None = None, poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """Snapshots of the job as it changes, until it finishes: from its event stream, polling if that is full."""
        deadline = None if timeout is None else time.monotonic() + timeout
        streaming = True
        while self.status not in FINISHED:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"training job {self.id} still {self.status} after {timeout} s")
            if not streaming:
                time.sleep(poll if remaining is None else min(poll, remaining))
                yield self.refresh()
                continue
            read = STREAM_READ_TIMEOUT if remaining is None else min(STREAM_READ_TIMEOUT, remaining)
            try:
                yield from self._stream(httpx.Timeout(self._client.timeout, read=read), deadline)
            except BusyError:
                streaming = False  # the server's stream limit is reached: poll GET /train/{id} instead
                continue
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                pass  # a silent or broken stream: reconnect, or time out above
            if self.status not in FINISHED:
                yield self.refresh()

    def _stream(self, timeout: httpx.Timeout, deadline: float | None) -> Iterator[dict[str, Any]]:
        path = f"/train/{self.id}/events"
        with self._client._http.stream("GET", path, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise_for(response)
            for event in events(response.iter_lines()):
                if event.name == "end":
                    return
                self.data = json.loads(event.data)
                yield self.data
                if deadline is not None and time.monotonic() > deadline:
                    return

    def wait(self, timeout: float | None = None, progress: bool = True, poll: float = 0.5) -> dict[str, Any]:
        """Follow the job until it finishes; returns its result, raises JobFailedError if it failed or was cancelled."""
        bar = Progress(enabled=progress)
        try:
            bar.show(self.data)
            for snapshot in self.watch(timeout=timeout, poll=poll):
                bar.show(snapshot)
        finally:
            bar.close()
        if self.status != "succeeded":
            raise JobFailedError(self.data)
        result: dict[str, Any] = self.data["result"]
        return result


class Client:
    """Talks to one lstm-service; `token` is needed for training and store changes when the server sets one."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.url = url.rstrip("/")
        self._headers = headers
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        raise_for(response)
        return response

    def predict(
        self, inputs: np.ndarray, model: str = "lstm", version: int | None = None, binary: bool = False
    ) -> np.ndarray:
        """Cosines for sines shaped (seq, batch, 1); `binary` uses OIP binary tensors (fastest for big arrays)."""
        return self.prediction(inputs, model, version, binary).outputs

    def prediction(
        self, inputs: np.ndarray, model: str = "lstm", version: int | None = None, binary: bool = False
    ) -> Prediction:
        """Like predict(), with the model and version that answered."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if not binary:
            body: dict[str, Any] = {"inputs": x.tolist(), "model": model}
            if version is not None:
                body["version"] = version
            response = self._request(
                "POST", "/predict", content=_json_body(body), headers={"content-type": "application/json"}
            )
            answer = response.json()
            return Prediction(np.asarray(answer["outputs"], dtype=np.float32), answer["model"], answer["version"])
        raw = x.astype("<f4", copy=False).tobytes()
        header = _json_body(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
            }
        )
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
        response = self._request(
            "POST",
            path,
            content=header + raw,
            headers={HEADER_LENGTH_HEADER: str(len(header)), "content-type": "application/octet-stream"},
        )
        length = int(response.headers[HEADER_LENGTH_HEADER])
        meta = json.loads(response.content[:length])
        shape = meta["outputs"][0]["shape"]
        outputs = np.frombuffer(response.content[length:], dtype="<f4").reshape(shape).astype(np.float32)
        return Prediction(outputs, str(meta["model_name"]), int(meta["model_version"]))

    def stream(self, model: str = "lstm", version: int | str | None = None, binary: bool = False) -> Stream:
        """A WebSocket stream of one new sequence of `model` (a version, an alias, or None: the serving one).

        The server keeps the LSTM's state between chunks: send each new sample as it comes, and get its output
        (Stream.step, or send/recv). Closing the stream ends the sequence. `binary`: raw float32 messages.
        """
        scheme, rest = self.url.split("://", 1)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/stream"
        url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"
        return Stream.open(url, self._headers, self.timeout, binary)

    def models(self) -> list[dict[str, Any]]:
        """Every model with its versions, aliases and serving version."""
        models: list[dict[str, Any]] = self._request("GET", "/models").json()["models"]
        return models

    def promote(self, model: str, version: int, alias: str = "production") -> dict[str, Any]:
        """Point `alias` at `version` (promote or roll back)."""
        answer: dict[str, Any] = self._request(
            "PUT", f"/models/{model}/aliases/{alias}", json={"version": version}
        ).json()
        return answer

    def register(
        self, model: str, data: bytes, fmt: str = "auto", source: str = "", promote: str = "never"
    ) -> dict[str, Any]:
        """Publish a model file trained elsewhere (a TorchScript archive or an ONNX file) as a new version of `model`
        (POST /models/{model}/versions, a management call); the server checks it first. `fmt` auto: the server
        tells the format from the bytes. A failed check is a ClientError (422) naming it. Returns the new version,
        whether `production` was moved (`promote`: never, if_better or always) and its manifest."""
        params = {"format": fmt, "promote": promote} | ({"source": source} if source else {})
        answer: dict[str, Any] = self._request(
            "POST",
            f"/models/{model}/versions",
            params=params,
            content=data,
            headers={"content-type": "application/octet-stream"},
        ).json()
        return answer

    def train(
        self,
        model: str = "lstm",
        preset: str = "robust",
        params: dict[str, Any] | None = None,
        dataset: tuple[np.ndarray, np.ndarray] | None = None,
        promote: str = "if_better",
    ) -> Job:
        """Queue a training job; `dataset` is (inputs, targets), each (seq, batch, 1)."""
        body: dict[str, Any] = {"model": model, "preset": preset, "params": params or {}, "promote": promote}
        if dataset is not None:
            body["dataset"] = {
                "inputs": np.asarray(dataset[0], dtype=np.float32).tolist(),
                "targets": np.asarray(dataset[1], dtype=np.float32).tolist(),
            }
        response = self._request(
            "POST", "/train", content=_json_body(body), headers={"content-type": "application/json"}
        )
        return Job(self, response.json())

    def job(self, job_id: str) -> Job:
        return Job(self, self._request("GET", f"/train/{job_id}").json())

    def jobs(self, limit: int = 20, offset: int = 0) -> list[Job]:
        page = self._request("GET", "/train", params={"limit": limit, "offset": offset}).json()
        return [Job(self, data) for data in page["jobs"]]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job; a finished one is a ClientError (409)."""
        answer: dict[str, Any] = self._request("DELETE", f"/train/{job_id}").json()
        return answer
