"""A Python client for lstm-service (httpx): predict, models, promote, train and follow jobs.

from service.client import Client
with Client("http://127.0.0.1:8000", token=None) as client:
    cosines = client.predict(sines)            # (seq, batch, 1) in, (seq, batch, 1) out
    job = client.train(params={"max_epochs": 500})
    job.wait()                                 # progress bar; raises JobFailedError on failure
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import orjson
from tqdm import tqdm

from service.oip import HEADER_LENGTH_HEADER

FINISHED = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """The service answered with an error status; `status` and `message` say which and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ClientError(ApiError):
    """A 4xx: the request was wrong (bad input, unknown model, no permission, ...)."""


class NotFoundError(ClientError):
    """A 404: no such model, version or job."""


class AuthError(ClientError):
    """A 401 or 403: a token is missing or wrong, or management is loopback-only."""


class BusyError(ClientError):
    """A 429: the training queue (or event-stream limit) is full; try later."""


class ServerError(ApiError):
    """A 5xx: the service could not answer (no model loaded yet, a refused checkpoint, ...)."""


class JobFailedError(Exception):
    """A training job that ended failed or cancelled."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"training job {job['id']} {job['status']}: {job.get('error', '')}")
        self.job = job


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text
    status = response.status_code
    kind: type[ApiError]
    if status == 404:
        kind = NotFoundError
    elif status in (401, 403):
        kind = AuthError
    elif status == 429:
        kind = BusyError
    elif status < 500:
        kind = ClientError
    else:
        kind = ServerError
    raise kind(status, message)


class Job:
    """A training job on the server."""

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

    def wait(self, timeout: float | None = None, progress: bool = True, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the job finishes; returns its result, raises JobFailedError if it failed or was cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = tqdm(total=int(self.data["progress"]["max_epochs"]), unit="epoch", disable=not progress)
        try:
            while self.refresh()["status"] not in FINISHED:
                state = self.data["progress"]
                bar.update(int(state["epoch"]) - bar.n)
                if state["loss"] is not None:
                    bar.set_postfix(loss=f"{state['loss']:.2e}", refresh=False)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"training job {self.id} still {self.status} after {timeout} s")
                time.sleep(poll)
            bar.update(int(self.data["progress"]["epoch"]) - bar.n)
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
        _raise_for(response)
        return response

    def predict(
        self, inputs: np.ndarray, model: str = "lstm", version: int | None = None, binary: bool = False
    ) -> np.ndarray:
        """Cosines for sines shaped (seq, batch, 1); `binary` uses OIP binary tensors (fastest for big arrays)."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if not binary:
            body: dict[str, Any] = {"inputs": x, "model": model}
            if version is not None:
                body["version"] = version
            content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
            response = self._request("POST", "/predict", content=content, headers={"content-type": "application/json"})
            return np.asarray(response.json()["outputs"], dtype=np.float32)
        raw = x.astype("<f4", copy=False).tobytes()
        header = orjson.dumps(
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
        meta = orjson.loads(response.content[:length])
        shape = meta["outputs"][0]["shape"]
        return np.frombuffer(response.content[length:], dtype="<f4").reshape(shape).astype(np.float32)

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
                "inputs": np.asarray(dataset[0], dtype=np.float32),
                "targets": np.asarray(dataset[1], dtype=np.float32),
            }
        content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        response = self._request("POST", "/train", content=content, headers={"content-type": "application/json"})
        return Job(self, response.json())

    def job(self, job_id: str) -> Job:
        return Job(self, self._request("GET", f"/train/{job_id}").json())

    def jobs(self, limit: int = 20, offset: int = 0) -> list[Job]:
        page = self._request("GET", "/train", params={"limit": limit, "offset": offset}).json()
        return [Job(self, data) for data in page["jobs"]]
