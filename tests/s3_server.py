"""A real S3 HTTP endpoint for the tests: moto's standalone server (moto[server], a dev dependency) in a subprocess.

The server listens on loopback by default (or on a network namespace's bridge address for the cross-host tests)
on a free port and dies with the test process (a parent-death signal). moto keeps its objects in memory, so a
`stop()` + `start()` (same port) comes back empty: use it only where the data does not matter. To make S3
unreachable and bring it back with its data, `pause()` (SIGSTOP) and `resume()` (SIGCONT): a stopped server
still accepts TCP connections (the kernel does that) but never answers, so clients run into their read
timeouts, which is what an S3 that went away looks like to them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from tests.postgres_server import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0
# moto accepts any credentials unless authentication is switched on (enable_authentication); these are for the
# clients' signatures only.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class S3Server:
    """moto's S3 server on `host`:`port`; `start`, `stop`, `pause`/`resume`, `url`, `environment()`."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.folder = Path(tempfile.mkdtemp(prefix="lstm-s3-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The endpoint, for AWS_ENDPOINT_URL."""
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The standard AWS variables a client (boto3, a child process) needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, access_key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> S3Client:
        """A boto3 S3 client of this server, for the tests' own set-up (buckets, direct reads)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
            region_name=REGION,
        )

    def start(self) -> None:
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "--host", self.host, "--port", str(self.port)],
                preexec_fn=_die_with_parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start: {self.log_tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def pause(self) -> None:
        """Make the server unreachable but alive (SIGSTOP): connections open, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (its objects are gone: moto keeps them in memory); `start()` again serves the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket; its name."""
        bucket = name or f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def enable_authentication(self) -> tuple[str, str]:
        """From now on the server checks every request's signature against its IAM users (moto's "reset-auth"):
        makes a user allowed everything on S3 and returns its (access key id, secret). Before, any key passes."""
        iam: Any = boto3.session.Session().client(  # no IAM stubs: this is test set-up
            "iam",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        iam.create_user(UserName="lstm")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lstm", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="lstm")["AccessKey"]
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )  # not a form: moto reads the raw body
        with urllib.request.urlopen(request, timeout=10):
            pass
        return key["AccessKeyId"], key["SecretAccessKey"]
