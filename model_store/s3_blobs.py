"""S3Blobs: the Blobs of a database-backed store as objects in an S3 bucket (AWS, MinIO, moto...), over boto3.

The client is boto3's, configured the standard AWS way (AWS_ENDPOINT_URL for an S3-compatible server,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ~/.aws); only the limits are ours:
`connect_timeout` and `read_timeout` (seconds, per attempt) and `attempts` (in all, the first included, with
botocore's "standard" retry mode and its backoff between them), so an unreachable S3 fails a call after about
attempts x (timeout + backoff) instead of hanging. Every failure of S3 itself (unreachable, timed out, denied,
no such bucket) is a StorageError naming the object's s3:// address and the cause; a missing object is a
FileNotFoundError, as for FolderBlobs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from model_store.blobs import KEY_PREFIX, check_digest, key_of
from model_store.errors import storage_error

if TYPE_CHECKING:  # boto3-stubs is a dev dependency: the types exist for mypy only
    from mypy_boto3_s3 import S3Client

SCHEME = "s3"
# S3's rules for a bucket name (the general-purpose buckets'), checked here so a typo is a clear ValueError at
# start rather than botocore's parameter error on the first request.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MISSING_CODES = frozenset({"NoSuchKey", "404"})  # get_object says NoSuchKey; a HEAD has no body, only its status
DENIED_HINT = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy"


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of 's3://BUCKET[/PREFIX]'; ValueError saying what is expected otherwise."""
    expected = "expected s3://BUCKET/PREFIX (e.g. s3://models/lstm)"
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not an S3 location: {url!r}; {expected}")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(f"an S3 location has no user, port, query or fragment: {url!r}; {expected}")
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"no bucket in the S3 location {url!r}; {expected}")
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise ValueError(
            f"not a valid S3 bucket name: {bucket!r} (3-63 characters: lower-case letters, digits, '.', '-')"
        )
    prefix = parts.path.strip("/")
    if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
        raise ValueError(f"the prefix of {url!r} has an empty, '.' or '..' segment; {expected}")
    return bucket, prefix


def client(connect_timeout: float = 5.0, read_timeout: float = 30.0, attempts: int = 3) -> S3Client:
    """A boto3 S3 client with these limits; everything else from the standard AWS variables and files."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # total_max_attempts counts the first attempt too (botocore's own max_attempts counts only retries).
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", config=config)


class S3Blobs:
    """Immutable objects under `prefix` in `bucket`, each at PREFIX/sha256/<hex>."""

    def __init__(self, bucket: str, prefix: str, client: S3Client) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout: float = 5.0, read_timeout: float = 30.0, attempts: int = 3
    ) -> S3Blobs:
        """The blobs at 's3://BUCKET/PREFIX' (ValueError for anything else), with a client of these limits."""
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix, client(connect_timeout, read_timeout, attempts))

    def _object_key(self, key: str) -> str:
        if not key.startswith(KEY_PREFIX):
            raise ValueError(f"not an object key: {key!r}")
        key_of(key.removeprefix(KEY_PREFIX))  # the rest must be a digest
        return f"{self.prefix}/{key}" if self.prefix else key

    def address(self, key: str) -> str:
        """The s3:// address of the object under `key`, for messages."""
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        """Upload unless the object exists. The key names the content, so a writer racing us uploads the same
        bytes and either upload may win; the sha256 goes with the upload, so S3 refuses a body that arrived
        damaged or cut short (BadDigest) instead of storing it."""
        name = self._object_key(key)
        check_digest(key, data, "the data to upload")  # a key that does not name its bytes would poison readers
        with self._errors("writing", key):
            if self._exists(name):
                return
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ChecksumSHA256=digest)

    def _exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        name = self._object_key(key)
        with self._errors("reading", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _code(exc) in MISSING_CODES:
                    raise FileNotFoundError(f"no object {self.address(key)}") from None
                raise
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @contextmanager
    def _errors(self, doing: str, key: str) -> Iterator[None]:
        """botocore's failures as a StorageError naming the object and the cause in a line (no traceback)."""
        try:
            yield
        except ClientError as exc:
            raise storage_error(f"{doing} {self.address(key)}", _client_error_cause(exc)) from exc
        except BotoCoreError as exc:  # unreachable, timed out, no credentials, a body cut short...
            raise storage_error(f"{doing} {self.address(key)}", str(exc)) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _client_error_cause(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code, message = error.get("Code", ""), error.get("Message", "")
    if code.isdigit():  # a HEAD's error has no body: only the status and its reason phrase
        cause = f"S3 answered {code} {message}".rstrip()
    else:
        cause = f"{code}: {message}" if message else f"{code} (HTTP {status})"
    if status == 403:
        cause += f" ({DENIED_HINT})"
    return cause
